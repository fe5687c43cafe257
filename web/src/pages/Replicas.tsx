import { useState } from 'preact/hooks';
import { api, ApiError } from '../api.ts';
import { Alert, Field, StateBadge, StoragePoolField } from '../components/widgets.tsx';
import { bytes, when } from '../format.ts';
import { useAction, useResource } from '../resource.ts';
import type { Replica, StoragePool, Template } from '../types.ts';

interface Holders {
  desktopPools?: Array<{ id: string; name: string }>;
  clones: Array<{ id: string; name: string }>;
  cloneCount?: number;
}

function PromoteForm(props: { templates: Template[]; pools: StoragePool[] }) {
  const [versionId, setVersionId] = useState('');
  const [poolId, setPoolId] = useState('');
  const [queued, setQueued] = useState<string | undefined>();
  const action = useAction();
  const versions = props.templates.flatMap((t) => (t.versions ?? []).map((v) => ({ id: v.id, label: `${t.name} v${v.version}` })));
  return (
    <form
      class="panel"
      aria-labelledby="promote"
      onSubmit={(e) => {
        e.preventDefault();
        setQueued(undefined);
        void action.run(async () => {
          await api('POST', '/replicas', { templateVersionId: versionId, storagePoolId: poolId });
          setQueued(versions.find((v) => v.id === versionId)?.label);
        });
      }}
    >
      <h2 id="promote">Promote a version</h2>
      <div class="row">
        <Field label="Template version">
          <select name="templateVersionId" required value={versionId} onChange={(e) => setVersionId(e.currentTarget.value)}>
            <option value="">Choose a version…</option>
            {versions.map((v) => (
              <option key={v.id} value={v.id}>
                {v.label}
              </option>
            ))}
          </select>
        </Field>
        <StoragePoolField pools={props.pools} value={poolId} onChange={setPoolId} />
      </div>
      {queued ? <p role="status">Promotion of {queued} started; the replica appears below.</p> : null}
      <Alert message={action.error} />
      <button type="submit" disabled={action.busy}>
        Promote
      </button>
    </form>
  );
}

function ReplicaRow(props: { r: Replica; pools: StoragePool[]; onDelete: (r: Replica) => void; onAction: (fn: () => Promise<unknown>) => void }) {
  const { r } = props;
  const [target, setTarget] = useState('');
  const poolName = props.pools.find((p) => p.id === r.storagePoolId)?.name ?? r.storagePoolId.slice(0, 8);
  const label = `${r.templateName} v${r.version}`;
  return (
    <tr>
      <td>{label}</td>
      <td>{poolName}</td>
      <td>
        <StateBadge state={r.state} />
        {r.error ? <div class="muted">{r.error}</div> : null}
      </td>
      <td>{bytes(r.sizeBytes)}</td>
      <td>{r.cloneCount}</td>
      <td>{when(r.createdAt)}</td>
      <td class="actions">
        {/* Named without "storage pool": the promote form's `Storage pool` field must be the only match. */}
        <span class="inline">
          <select value={target} onChange={(e) => setTarget(e.currentTarget.value)} aria-label={`Move ${label} to`}>
            <option value="">Move to…</option>
            {props.pools
              .filter((p) => p.id !== r.storagePoolId)
              .map((p) => (
                <option key={p.id} value={p.id}>
                  {p.name} ({p.tier})
                </option>
              ))}
          </select>
        </span>
        <button type="button" disabled={!target} onClick={() => props.onAction(() => api('POST', `/replicas/${r.id}/move`, { storagePoolId: target }))}>
          Move
        </button>
        <button type="button" onClick={() => props.onAction(() => api('POST', `/replicas/${r.id}/verify`))}>
          Verify
        </button>
        <button type="button" class="danger" onClick={() => props.onDelete(r)}>
          Delete
        </button>
      </td>
    </tr>
  );
}

export function Replicas() {
  const replicas = useResource(() => api<Replica[]>('GET', '/replicas'), [], ['replica.', 'clone.', 'desktop-pool.']);
  const pools = useResource(() => api<StoragePool[]>('GET', '/storage-pools'), [], ['storage-pool.', 'replica.']);
  const templates = useResource(
    async () => Promise.all((await api<Template[]>('GET', '/templates')).map((t) => api<Template>('GET', `/templates/${t.id}`))),
    [],
    ['template.'],
  );
  const [holders, setHolders] = useState<Holders | undefined>();
  const act = useAction();

  const run = (fn: () => Promise<unknown>) => {
    setHolders(undefined);
    void act.run(async () => {
      try {
        await fn();
      } catch (err) {
        // A refused delete names what holds the replica; show the list, not just the sentence.
        if (err instanceof ApiError && err.code === 'REPLICA_IN_USE') setHolders(err.details as Holders);
        throw err;
      }
      replicas.reload();
    });
  };

  return (
    <section>
      <h1>Replicas</h1>
      <Alert message={replicas.error ?? pools.error ?? templates.error} />
      <PromoteForm templates={templates.data ?? []} pools={pools.data ?? []} />
      <Alert message={act.error}>
        {holders && ((holders.desktopPools?.length ?? 0) > 0 || holders.clones.length > 0) ? (
          <ul>
            {(holders.desktopPools ?? []).map((p) => (
              <li key={p.id}>
                Desktop pool <a href={`/pools/${p.id}`}>{p.name}</a>
              </li>
            ))}
            {holders.clones.length > 0 ? <li>{holders.cloneCount ?? holders.clones.length} clone(s), e.g. {holders.clones.slice(0, 5).map((c) => c.name).join(', ')}</li> : null}
          </ul>
        ) : null}
      </Alert>
      <table>
        <thead>
          <tr>
            <th scope="col">Template version</th>
            <th scope="col">Storage pool</th>
            <th scope="col">State</th>
            <th scope="col">Size</th>
            <th scope="col">Clones</th>
            <th scope="col">Created</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(replicas.data ?? []).map((r) => (
            <ReplicaRow key={r.id} r={r} pools={pools.data ?? []} onDelete={(x) => run(() => api('DELETE', `/replicas/${x.id}`))} onAction={run} />
          ))}
        </tbody>
      </table>
      {replicas.data?.length === 0 ? <p class="muted">No replicas yet: promote a template version.</p> : null}
    </section>
  );
}
