import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import { Alert, ConfirmDialog, Field } from '../components/widgets.tsx';
import { when } from '../format.ts';
import { useAction, useResource } from '../resource.ts';
import type { Host } from '../types.ts';

export function Hosts() {
  const hosts = useResource(() => api<Host[]>('GET', '/hosts'), [], ['host.']);
  const [name, setName] = useState('');
  const [nqn, setNqn] = useState('');
  const [removing, setRemoving] = useState<Host | undefined>();
  const add = useAction();
  const remove = useAction();
  return (
    <section>
      <h1>Hosts</h1>
      <Alert message={hosts.error} />
      <form
        class="panel"
        aria-labelledby="new-host"
        onSubmit={(e) => {
          e.preventDefault();
          void add.run(async () => {
            await api('POST', '/hosts', { name: name.trim(), nqn: nqn.trim() });
            setName('');
            setNqn('');
            hosts.reload();
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
        </div>
        <Alert message={add.error} />
        <button type="submit" disabled={add.busy}>
          Add host
        </button>
      </form>
      <Alert message={remove.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">NQN</th>
            <th scope="col">Added</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(hosts.data ?? []).map((h) => (
            <tr key={h.id}>
              <td>{h.name}</td>
              <td>
                <code>{h.nqn}</code>
              </td>
              <td>{when(h.createdAt)}</td>
              <td>
                <button type="button" class="danger" aria-label={`Remove host ${h.name}`} onClick={() => setRemoving(h)}>
                  Remove
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {hosts.data?.length === 0 ? <p class="muted">No hosts yet.</p> : null}
      <ConfirmDialog
        open={removing !== undefined}
        title="Remove host?"
        message={<p>Host {removing?.name} will no longer be allowed to connect. Thicket refuses while desktop pools use it.</p>}
        confirmLabel="Remove host"
        onCancel={() => setRemoving(undefined)}
        onConfirm={() => {
          const h = removing!;
          setRemoving(undefined);
          void remove.run(async () => {
            await api('DELETE', `/hosts/${h.id}`);
            hosts.reload();
          });
        }}
      />
    </section>
  );
}
