-- A session remembers which token it was made with (its sha256): once that token is no longer valid
-- (THICKET_ADMIN_TOKEN changed), its sessions end too. Sessions from before this column have none and
-- end at once.
ALTER TABLE sessions ADD COLUMN token_sha256 text;
