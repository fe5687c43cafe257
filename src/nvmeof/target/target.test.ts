import { describe, expect, it } from 'vitest';
import { Target } from './target.ts';

const HOST = 'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001';
const SUB = 'nqn.2026-11.io.thicket:lab';

function targetWith(advertiseAddress?: string): Target {
  const t = new Target({ ioPort: 4420, advertiseAddress });
  t.addSubsystem(SUB);
  t.setHosts(SUB, [HOST]);
  return t;
}

describe('discovery log entries', () => {
  it('tell an IPv4 host that reached a dual-stack listener the IPv4 address, as an IPv4 entry', () => {
    const [e] = targetWith().discoveryEntries(HOST, '::ffff:10.1.2.3');
    expect(e).toMatchObject({ traddr: '10.1.2.3', adrfam: 1, trsvcid: '4420', subnqn: SUB });
  });

  it('give IPv6 hosts an IPv6 entry and prefer the advertised address', () => {
    expect(targetWith().discoveryEntries(HOST, 'fd00::5')[0]).toMatchObject({ traddr: 'fd00::5', adrfam: 2 });
    expect(targetWith('192.0.2.7').discoveryEntries(HOST, '::ffff:10.1.2.3')[0]).toMatchObject({ traddr: '192.0.2.7', adrfam: 1 });
  });

  it('list only the subsystems the host may use', () => {
    expect(targetWith().discoveryEntries('nqn.2014-08.org.nvmexpress:uuid:other', '127.0.0.1')).toEqual([]);
  });
});
