// NVMe Qualified Names (NVMe base spec §4.5): nqn.yyyy-mm.reverse.domain:string, or the UUID form
// nqn.2014-08.org.nvmexpress:uuid:<uuid>; at most 223 bytes.

const DOMAIN_FORM = /^nqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[\x21-\x7e]+)?$/i;
const UUID_FORM = /^nqn\.2014-08\.org\.nvmexpress:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function nqnProblem(nqn: string): string | undefined {
  if (Buffer.byteLength(nqn) > 223) return 'must be at most 223 bytes';
  if (nqn === 'nqn.2014-08.org.nvmexpress.discovery') return 'is the discovery NQN';
  if (UUID_FORM.test(nqn) || DOMAIN_FORM.test(nqn)) return undefined;
  return 'must look like nqn.yyyy-mm.reverse.domain:name or nqn.2014-08.org.nvmexpress:uuid:<uuid>';
}

/** The part after the prefix of a subsystem NQN: letters, digits, '.', '_', '-'. */
export const SUBSYSTEM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
