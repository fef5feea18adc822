-- LoadLabels, step 4: the swap starts. Taken on `labels` itself before its partitions are
-- touched (the source's old partition dropped, labels_default cleaned, the new one attached),
-- so that loaders of different sources swap one after the other instead of deadlocking over
-- labels_default. Held until the caller commits (milliseconds after this).
LOCK TABLE ONLY labels IN SHARE UPDATE EXCLUSIVE MODE;
