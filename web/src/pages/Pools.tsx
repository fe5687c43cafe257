import { useMemo, useState } from 'preact/hooks';
import { api } from '../api.ts';
import { Alert, Field, StateBadge, StoragePoolField } from '../components/widgets.tsx';
import { bytes } from '../format.ts';
import { navigate } from '../router.ts';
import { useAction, useResource } from '../resource.ts';
import { DESKTOP_STATES, type DesktopPool, type Host, type Replica, type StoragePool } from '../types.ts';
import { desktopName, parseNamePattern } from '../../../src/control/desktop-pools/name-pattern.ts';

/** The first few and the last names the pattern gives, or why it gives none. */
function previewNames(pattern: string, size: number): { names: string[]; error?: string } {
  try {
    const p = parseNamePattern(pattern);
    if (size <= 0) return { names: [] };
    const first = Array.from({ length: Math.min(size, 3) }, (_, i) => desktopName(p, i + 1));
    return { names: size > 4 ? [...first, '…', desktopName(p, size)] : size === 4 ? [...first, desktopName(p, 4)] : first };
  } catch (err) {
    return { names: [], error: (err as Error).message.replace(/^namePattern: /, '') };
  }
}

function CreatePool(props: { replicas: Replica[]; storagePools: StoragePool[]; hosts: Host[] }) {
  const ready = props.replicas.filter((r) => r.state === 'ready');
  const [name, setName] = useState('');
  const [replicaId, setReplicaId] = useState('');
  const [storagePoolId, setStoragePoolId] = useState('');
  const [size, setSize] = useState('10');
  const [pattern, setPattern] = useState('desktop-{n:000}');
  const [hostIds, setHostIds] = useState<string[]>([]);
  const [refreshOnLogoff, setRefreshOnLogoff] = useState(false);
  const action = useAction();
  const n = Number(size);
  const preview = useMemo(() => previewNames(pattern, Number.isInteger(n) ? n : 0), [pattern, n]);

  const chosenReplica = ready.find((r) => r.id === replicaId);
  // Clones live beside their replica by default: preselect its storage pool.
  const effectivePool = storagePoolId || chosenReplica?.storagePoolId || '';

  return (
    <form
      class="panel"
      aria-labelledby="new-pool"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          const created = await api<{ pool: DesktopPool }>('POST', '/desktop-pools', {
            name: name.trim(),
            replicaId,
            storagePoolId: effectivePool,
            size: n,
            namePattern: pattern.trim(),
            hostIds,
            ...(refreshOnLogoff ? { refreshOnLogoff: true } : {}),
          });
          navigate(`/pools/${created.pool.id}`);
        });
      }}
    >
      <h2 id="new-pool">New desktop pool</h2>
      <div class="row">
        <Field label="Name">
          <input name="name" required maxLength={40} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
        <Field label="Replica">
          <select name="replicaId" required value={replicaId} onChange={(e) => setReplicaId(e.currentTarget.value)}>
            <option value="">Choose a replica…</option>
            {ready.map((r) => (
              <option key={r.id} value={r.id}>
                {r.templateName} v{r.version} ({props.storagePools.find((p) => p.id === r.storagePoolId)?.name ?? 'pool'})
              </option>
            ))}
          </select>
        </Field>
        <StoragePoolField pools={props.storagePools} value={effectivePool} onChange={setStoragePoolId} />
        <Field label="Size">
          <input name="size" type="number" min={0} max={100000} step={1} required value={size} onInput={(e) => setSize(e.currentTarget.value)} />
        </Field>
        <Field label="Name pattern" hint="One {n} placeholder; {n:000} pads to three digits.">
          <input name="namePattern" required maxLength={64} value={pattern} onInput={(e) => setPattern(e.currentTarget.value)} aria-describedby="name-preview" />
        </Field>
        <Field label="Hosts" hint="Hosts allowed to connect; none: add them later.">
          <select
            name="hostIds"
            multiple
            size={Math.min(4, Math.max(2, props.hosts.length))}
            onChange={(e) => setHostIds(Array.from(e.currentTarget.selectedOptions, (o) => o.value))}
          >
            {props.hosts.map((h) => (
              <option key={h.id} value={h.id} selected={hostIds.includes(h.id)}>
                {h.name}
              </option>
            ))}
          </select>
        </Field>
        <label class="check">
          <input type="checkbox" name="refreshOnLogoff" checked={refreshOnLogoff} onChange={(e) => setRefreshOnLogoff(e.currentTarget.checked)} /> Refresh on logoff
        </label>
      </div>
      <p id="name-preview" class="preview" aria-live="polite">
        {preview.error ? <span class="invalid">Name pattern: {preview.error}</span> : preview.names.length ? <>Desktops will be named {preview.names.join(', ')}</> : 'No desktops yet.'}
      </p>
      <Alert message={action.error} />
      <button type="submit" disabled={action.busy}>
        Create pool
      </button>
    </form>
  );
}

export function Pools() {
  const pools = useResource(() => api<DesktopPool[]>('GET', '/desktop-pools'), [], ['desktop-pool.', 'desktop.state', 'job.succeeded', 'job.failed']);
  const replicas = useResource(() => api<Replica[]>('GET', '/replicas'), [], ['replica.']);
  const storagePools = useResource(() => api<StoragePool[]>('GET', '/storage-pools'), [], ['storage-pool.']);
  const hosts = useResource(() => api<Host[]>('GET', '/hosts'), [], ['host.']);
  const err = pools.error ?? replicas.error ?? storagePools.error ?? hosts.error;
  return (
    <section>
      <h1>Desktop pools</h1>
      <Alert message={err} />
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">State</th>
            <th scope="col">Size</th>
            {DESKTOP_STATES.map((s) => (
              <th scope="col" key={s}>
                {s}
              </th>
            ))}
            <th scope="col">Space saved</th>
          </tr>
        </thead>
        <tbody>
          {(pools.data ?? []).map((p) => (
            <tr key={p.id}>
              <td>
                <a href={`/pools/${p.id}`}>{p.name}</a>
              </td>
              <td>
                <StateBadge state={p.state} />
              </td>
              <td>{p.size}</td>
              {DESKTOP_STATES.map((s) => (
                <td key={s}>{p.desktops[s]}</td>
              ))}
              <td>{bytes(p.space.savedBytes)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {pools.data?.length === 0 ? <p class="muted">No desktop pools yet.</p> : null}
      <CreatePool replicas={replicas.data ?? []} storagePools={storagePools.data ?? []} hosts={hosts.data ?? []} />
    </section>
  );
}
