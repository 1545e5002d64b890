-- No query reads scans by checkpoint and time: the facts of a scan look up the guard's
-- scans (scans_guard_time), a round's detail its own scans (scans_round), reports a site's
-- period (scans_site_time). Every scan paid to keep this index; checkpoints are never
-- deleted, so the composite foreign key does not need it either.
DROP INDEX scans_checkpoint_time;
