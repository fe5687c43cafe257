import { Fragment } from 'preact';
import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import { Alert, Field } from '../components/widgets.tsx';
import { when } from '../format.ts';
import { useAction, useResource } from '../resource.ts';
import type { Host, HostProbe } from '../types.ts';

function AddHost(props: { onAdded: () => void }) {
  const [name, setName] = useState('');
  const [nqn, setNqn] = useState('');
  const [hookType, setHookType] = useState('');
  const [address, setAddress] = useState('');
  const [port, setPort] = useState('22');
  const [username, setUsername] = useState('root');
  const [privateKey, setPrivateKey] = useState('');
  const [maxDesktops, setMaxDesktops] = useState('');
  const add = useAction();
  return (
    <form
      class="panel"
      aria-labelledby="new-host"
      onSubmit={(e) => {
        e.preventDefault();
        void add.run(async () => {
          await api('POST', '/hosts', {
            name: name.trim(),
            nqn: nqn.trim(),
            ...(hookType
              ? { hookType, ssh: { address: address.trim(), port: Number(port), username: username.trim(), privateKey: privateKey.trim() + '\n' } }
              : {}),
            ...(maxDesktops ? { maxDesktops: Number(maxDesktops) } : {}),
          });
          setName('');
          setNqn('');
          setPrivateKey('');
          props.onAdded();
        });
      }}
    >
      <h2 id="new-host">Add a host</h2>
      <div class="row">
        <Field label="Name">
          <input name="name" required maxLength={64} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Host NQN" hint="From /etc/nvme/hostnqn on the hypervisor.">
          <input name="nqn" required maxLength={223} placeholder="nqn.2014-08.org.nvmexpress:uuid:…" value={nqn} onInput={(e) => setNqn(e.currentTarget.value)} />
        </Field>
        <Field label="Hook type" hint="How Thicket attaches desktops on this host over SSH.">
          <select name="hookType" value={hookType} onChange={(e) => setHookType(e.currentTarget.value)}>
            <option value="">none (NVMe access only)</option>
            <option value="linux-nvme">linux-nvme</option>
            <option value="libvirt">libvirt</option>
          </select>
        </Field>
        <Field label="Max desktops" hint="Empty: no limit.">
          <input name="maxDesktops" type="number" min={0} value={maxDesktops} onInput={(e) => setMaxDesktops(e.currentTarget.value)} />
        </Field>
      </div>
      {hookType ? (
        <div class="row">
          <Field label="SSH address">
            <input name="sshAddress" required value={address} onInput={(e) => setAddress(e.currentTarget.value)} />
          </Field>
          <Field label="SSH port">
            <input name="sshPort" type="number" min={1} max={65535} required value={port} onInput={(e) => setPort(e.currentTarget.value)} />
          </Field>
          <Field label="SSH user">
            <input name="sshUser" required value={username} onInput={(e) => setUsername(e.currentTarget.value)} />
          </Field>
          <Field label="Private key" hint="Stored encrypted; never shown again.">
            <textarea name="privateKey" required rows={4} cols={48} spellcheck={false} value={privateKey} onInput={(e) => setPrivateKey(e.currentTarget.value)} />
          </Field>
        </div>
      ) : null}
      <Alert message={add.error} />
      <button type="submit" disabled={add.busy}>
        Add host
      </button>
    </form>
  );
}

function ProbeReport(props: { host: Host; probe: HostProbe; onTrust: () => void; busy: boolean }) {
  const { probe, host } = props;
  const yes = (v: boolean | null) => (v === null ? 'n/a' : v ? 'yes' : 'no');
  return (
    <div class="panel" role="region" aria-label={`Test of ${host.name}`}>
      <p>
        Host key <code>{probe.hostKey.fingerprint}</code> ({probe.hostKey.type}){' '}
        {probe.hostKey.pinned ? (probe.hostKey.matches ? '— pinned, matches.' : '— DOES NOT MATCH the pinned key.') : '— not pinned yet.'}
      </p>
      <p>
        NQN {probe.nqn ? <code>{probe.nqn}</code> : 'unknown'} {probe.nqnMatches ? '(matches)' : '(differs from the registered NQN)'} · nvme-cli {yes(probe.nvmeCli)} · nvme-tcp {yes(probe.nvmeTcp)} · virsh {yes(probe.virsh)}
        {probe.kernel ? ` · kernel ${probe.kernel}` : ''}
      </p>
      {!probe.hostKey.pinned || probe.hostKey.matches === false ? (
        <button type="button" disabled={props.busy} onClick={props.onTrust}>
          Trust this key
        </button>
      ) : null}
    </div>
  );
}

export function Hosts() {
  const hosts = useResource(() => api<Host[]>('GET', '/hosts'), [], ['host.']);
  const [probes, setProbes] = useState<Record<string, HostProbe>>({});
  const act = useAction();
  return (
    <section>
      <h1>Hosts</h1>
      <Alert message={hosts.error} />
      <AddHost onAdded={hosts.reload} />
      <Alert message={act.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">NQN</th>
            <th scope="col">Hooks</th>
            <th scope="col">Host key</th>
            <th scope="col">Added</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(hosts.data ?? []).map((h) => (
            <Fragment key={h.id}>
              <tr>
                <td>{h.name}</td>
                <td>
                  <code>{h.nqn}</code>
                </td>
                <td>{h.hookType ? `${h.hookType} via ${h.ssh?.username}@${h.ssh?.address}:${h.ssh?.port}` : '–'}</td>
                <td>{h.hostKeyFingerprint ? <code>{h.hostKeyFingerprint}</code> : h.ssh ? 'not pinned' : '–'}</td>
                <td>{when(h.createdAt)}</td>
                <td class="actions">
                  {h.ssh ? (
                    <button
                      type="button"
                      disabled={act.busy}
                      onClick={() => void act.run(async () => setProbes({ ...probes, [h.id]: await api<HostProbe>('POST', `/hosts/${h.id}/test`) }))}
                    >
                      Test
                    </button>
                  ) : null}
                  <button type="button" class="danger" onClick={() => void act.run(async () => {
                      await api('DELETE', `/hosts/${h.id}`);
                      hosts.reload();
                    })}>
                    Remove
                  </button>
                </td>
              </tr>
              {probes[h.id] ? (
                <tr>
                  <td colSpan={6}>
                    <ProbeReport
                      host={h}
                      probe={probes[h.id]}
                      busy={act.busy}
                      onTrust={() =>
                        void act.run(async () => {
                          await api('POST', `/hosts/${h.id}/trust`, { fingerprint: probes[h.id].hostKey.fingerprint });
                          const { [h.id]: _pinned, ...rest } = probes;
                          setProbes(rest);
                          hosts.reload();
                        })
                      }
                    />
                  </td>
                </tr>
              ) : null}
            </Fragment>
          ))}
        </tbody>
      </table>
      {hosts.data?.length === 0 ? <p class="muted">No hosts yet.</p> : null}
    </section>
  );
}
