-- Hypervisor hooks: hosts reached over SSH (address, user, an encrypted private key or a key file path,
-- the pinned host key) with a hook type; desktops placed on a host and whether the attach hook ran;
-- pools with VM settings for the libvirt domain and the refresh-on-logoff policy.
ALTER TABLE hosts ADD COLUMN ssh_address text;
ALTER TABLE hosts ADD COLUMN ssh_port integer CHECK (ssh_port BETWEEN 1 AND 65535);
ALTER TABLE hosts ADD COLUMN ssh_username text;
-- AES-256-GCM with THICKET_SECRET_KEY: "v1:<iv>:<tag>:<ciphertext>", base64 parts. Never returned by the API.
ALTER TABLE hosts ADD COLUMN ssh_private_key_enc text;
ALTER TABLE hosts ADD COLUMN ssh_private_key_path text;
ALTER TABLE hosts ADD COLUMN hook_type text CHECK (hook_type IN ('linux-nvme', 'libvirt'));
-- OpenSSH-style "SHA256:<base64>" of the host key the operator trusted.
ALTER TABLE hosts ADD COLUMN host_key_fingerprint text;
ALTER TABLE hosts ADD COLUMN max_desktops integer CHECK (max_desktops >= 0);
ALTER TABLE hosts ADD CONSTRAINT hosts_ssh_complete CHECK (
  (ssh_address IS NULL AND hook_type IS NULL)
  OR (ssh_address IS NOT NULL AND ssh_port IS NOT NULL AND ssh_username IS NOT NULL AND hook_type IS NOT NULL
      AND (ssh_private_key_enc IS NOT NULL) <> (ssh_private_key_path IS NOT NULL))
);

ALTER TABLE desktops ADD COLUMN host_id uuid REFERENCES hosts (id);
ALTER TABLE desktops ADD COLUMN attached boolean NOT NULL DEFAULT false;
ALTER TABLE desktops ADD COLUMN error text;
CREATE INDEX desktops_host ON desktops (host_id) WHERE host_id IS NOT NULL;

ALTER TABLE desktop_pools ADD COLUMN refresh_on_logoff boolean NOT NULL DEFAULT false;
ALTER TABLE desktop_pools ADD COLUMN vm_vcpus integer NOT NULL DEFAULT 2 CHECK (vm_vcpus BETWEEN 1 AND 256);
ALTER TABLE desktop_pools ADD COLUMN vm_memory_mib integer NOT NULL DEFAULT 4096 CHECK (vm_memory_mib BETWEEN 64 AND 4194304);
ALTER TABLE desktop_pools ADD COLUMN vm_network text NOT NULL DEFAULT 'default';

-- Last VM power state a host reported ('running' or 'stopped'); null until the first report.
ALTER TABLE desktops ADD COLUMN power text CHECK (power IN ('running', 'stopped'));
