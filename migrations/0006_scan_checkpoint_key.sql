-- A scan's checkpoint must be on the scan's own site. One composite key says that, where
-- two keys (to sites, to checkpoints) did not, and costs each stored scan one check instead
-- of two. Added NOT VALID, then validated: writers are not blocked while old rows are read.
ALTER TABLE scans
    DROP CONSTRAINT scans_site_id_fkey,
    DROP CONSTRAINT scans_checkpoint_id_fkey,
    ADD CONSTRAINT scans_checkpoint_fkey FOREIGN KEY (site_id, checkpoint_id)
        REFERENCES checkpoints (site_id, id) NOT VALID;
ALTER TABLE scans VALIDATE CONSTRAINT scans_checkpoint_fkey;
