-- Browser sessions of the web UI: a token sign-in is exchanged for an HttpOnly cookie. Only a sha256 of
-- the cookie's value is stored, so a leaked database cannot be replayed as a session.
CREATE TABLE sessions (
  id_sha256 text PRIMARY KEY,
  csrf_token text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
