-- the prediction service's map page: the runs that have buildings
SELECT DISTINCT run FROM buildings ORDER BY run;
