import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { api, errorText } from '../api.ts';
import { DesktopGrid, type GridModel } from '../components/DesktopGrid.tsx';
import { Alert, ConfirmDialog, Field, ProgressBar, StateBadge } from '../components/widgets.tsx';
import { events } from '../events.ts';
import { bytes } from '../format.ts';
import { poolPagePerf, resetPoolPagePerf } from '../perf.ts';
import { navigate } from '../router.ts';
import { useAction, useResource } from '../resource.ts';
import { DESKTOP_STATES, type Desktop, type DesktopPool, type DesktopState, type DesktopStateEvent, type Job, type JobProgressEvent, type Replica } from '../types.ts';
import { Schedules } from './Schedules.tsx';

type Change = { name: string; state: DesktopState | 'deleted' };

function emptyCounts(): Record<DesktopState, number> {
  return { provisioning: 0, available: 0, 'in-use': 0, refreshing: 0, failed: 0 };
}

/**
 * Desktop states of one pool, kept live: desktop.state events are queued and applied once per
 * animation frame, so a burst of thousands of changes costs one render, not thousands.
 */
function useLiveDesktops(poolId: string) {
  const model = useRef<GridModel>({ names: [], states: new Map() });
  const counts = useRef(emptyCounts());
  const queue = useRef<Change[]>([]);
  const frame = useRef<number | undefined>(undefined);
  const frameStart = useRef<number | undefined>(undefined);
  const loadedAt = useRef<number | undefined>(undefined);
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<string | undefined>();

  // While a list is on its way, queued changes wait for it (applied to the old model they would be
  // overwritten by the snapshot); then every change since the request began is applied on top. Changes
  // carry absolute states in order, so replaying ones the snapshot already has is harmless.
  const loading = useRef(0);
  const sinceLoad = useRef<Change[]>([]);
  const load = () => {
    const generation = ++loading.current;
    sinceLoad.current = [];
    api<Desktop[]>('GET', `/desktop-pools/${poolId}/desktops`).then(
      (list) => {
        if (generation !== loading.current) return;
        loading.current = 0;
        queue.current = [...sinceLoad.current, ...queue.current];
        sinceLoad.current = [];
        loadedAt.current = performance.now();
        const states = new Map<string, DesktopState>();
        const c = emptyCounts();
        for (const d of list) {
          states.set(d.name, d.state);
          c[d.state]++;
        }
        // Changes that arrived while the list was on its way are newer than it: apply them on top.
        model.current = { names: list.map((d) => d.name), states };
        counts.current = c;
        applyQueued();
        setError(undefined);
        setVersion((v) => v + 1);
      },
      (err) => {
        if (generation !== loading.current) return;
        loading.current = 0;
        setError(errorText(err));
      },
    );
  };

  const applyQueued = () => {
    const m = model.current;
    const c = counts.current;
    let removed = false;
    for (const ch of queue.current) {
      const before = m.states.get(ch.name);
      if (before !== undefined) c[before]--;
      // A shrink or delete reports removed desktops as "deleted": they leave the grid.
      if (ch.state === 'deleted') {
        if (before !== undefined) m.states.delete(ch.name);
        removed = true;
        continue;
      }
      if (before === undefined) m.names.push(ch.name);
      m.states.set(ch.name, ch.state);
      c[ch.state]++;
    }
    if (removed) m.names = m.names.filter((n) => m.states.has(n));
    poolPagePerf.desktopChangesApplied += queue.current.length;
    queue.current = [];
  };

  useEffect(() => {
    resetPoolPagePerf();
    load();
    const off = events.subscribe((e) => {
      if (e.type !== 'desktop.state' || (e as DesktopStateEvent).poolId !== poolId) return;
      poolPagePerf.eventsApplied++;
      for (const d of (e as DesktopStateEvent).desktops) queue.current.push({ name: d.name, state: d.state });
      if (loading.current !== 0) {
        // Kept until the snapshot arrives (see load).
        for (const ch of queue.current) sinceLoad.current.push(ch);
        queue.current = [];
        return;
      }
      if (frame.current === undefined) {
        frame.current = requestAnimationFrame(() => {
          frame.current = undefined;
          frameStart.current = performance.now();
          applyQueued();
          setVersion((v) => v + 1);
        });
      }
    });
    const offResync = events.onResync(load);
    return () => {
      off();
      offResync();
      if (frame.current !== undefined) cancelAnimationFrame(frame.current);
      frame.current = undefined;
      loading.current = 0;
    };
  }, [poolId]);

  // Runs after the DOM commit: closes the timing of the frame that caused it.
  useLayoutEffect(() => {
    const now = performance.now();
    if (frameStart.current !== undefined) {
      const ms = now - frameStart.current;
      poolPagePerf.applyMs += ms;
      poolPagePerf.frames++;
      poolPagePerf.maxFrameMs = Math.max(poolPagePerf.maxFrameMs, ms);
      frameStart.current = undefined;
    }
    if (loadedAt.current !== undefined) {
      poolPagePerf.renderMs = now - loadedAt.current;
      poolPagePerf.desktopsRendered = model.current.names.length;
      loadedAt.current = undefined;
    }
  }, [version]);

  return { model: model.current, counts: counts.current, version, error, reload: load };
}

/** The newest job of this pool: progress events update it between reloads. */
function usePoolJob(poolId: string) {
  const jobs = useResource(() => api<Job[]>('GET', `/jobs?resourceId=${poolId}&limit=20`), [poolId], ['job.queued', 'job.started', 'job.succeeded', 'job.failed', 'job.cancelled']);
  const [progress, setProgress] = useState<JobProgressEvent | undefined>();
  useEffect(
    () =>
      events.subscribe((e) => {
        if (e.type === 'job.progress' && (e as JobProgressEvent).resourceId === poolId) setProgress(e as JobProgressEvent);
      }),
    [poolId],
  );
  const latest = jobs.data?.[0];
  const live = latest && progress?.jobId === latest.id ? { ...latest, phase: progress.phase, progress: { done: progress.done, total: progress.total } } : latest;
  return { latest: live, history: jobs.data ?? [], error: jobs.error };
}

export function PoolPage(props: { id: string }) {
  const pool = useResource(() => api<DesktopPool>('GET', `/desktop-pools/${props.id}`), [props.id], ['desktop-pool.', 'job.succeeded', 'job.failed']);
  const replicas = useResource(() => api<Replica[]>('GET', '/replicas'), [], ['replica.']);
  const live = useLiveDesktops(props.id);
  const job = usePoolJob(props.id);
  const act = useAction();
  const [size, setSize] = useState<string | undefined>();
  const [replicaId, setReplicaId] = useState('');
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [notice, setNotice] = useState<string | undefined>();
  // Deleted while open (here or elsewhere): say so instead of showing the last loaded state.
  const [deleted, setDeleted] = useState(false);
  useEffect(
    () =>
      events.subscribe((e) => {
        if (e.type === 'desktop-pool.deleted' && e.poolId === props.id) setDeleted(true);
      }),
    [props.id],
  );

  // When a job of this pool ends, desktops may have come or gone: reload the list once.
  const lastJobState = useRef<string | undefined>(undefined);
  useEffect(() => {
    const s = job.latest ? `${job.latest.id}:${job.latest.state}` : undefined;
    if (lastJobState.current !== undefined && s !== lastJobState.current && job.latest && ['succeeded', 'failed', 'cancelled'].includes(job.latest.state)) live.reload();
    lastJobState.current = s;
  }, [job.latest?.id, job.latest?.state]);

  const p = pool.data;
  if (deleted) {
    return (
      <section>
        <p>
          <a href="/pools">← Desktop pools</a>
        </p>
        <h1>Desktop pool {p?.name ?? ''}</h1>
        <p role="status">This desktop pool has been deleted.</p>
      </section>
    );
  }
  if (!p) {
    return (
      <section>
        <h1>Desktop pool</h1>
        <Alert message={pool.error} />
        {!pool.error ? <p class="loading">Loading…</p> : null}
      </section>
    );
  }

  const running = job.latest && (job.latest.state === 'queued' || job.latest.state === 'running') ? job.latest : undefined;
  // While a resize runs, the bar counts towards the size asked for, not the size reached so far.
  const targetSize = running?.kind === 'desktop-pool.resize' && typeof running.payload.size === 'number' ? running.payload.size : Math.max(p.size, live.model.names.length);
  const counts = live.counts;
  const replica = replicas.data?.find((r) => r.id === p.replicaId);
  const others = (replicas.data ?? []).filter((r) => r.state === 'ready' && r.id !== p.replicaId && r.templateId === replica?.templateId);

  const submit = (what: string, fn: () => Promise<unknown>) => {
    setNotice(undefined);
    void act.run(async () => {
      await fn();
      setNotice(what);
    });
  };

  return (
    <section>
      <p>
        <a href="/pools">← Desktop pools</a>
      </p>
      <h1>
        {p.name} <StateBadge state={p.state} />
      </h1>
      {p.error ? <Alert message={`Last failure: ${p.error}`} /> : null}
      <Alert message={live.error ?? job.error} />
      <dl class="facts">
        <div>
          <dt>Replica</dt>
          <dd>{replica ? `${replica.templateName} v${replica.version}` : p.replicaId}</dd>
        </div>
        <div>
          <dt>Name pattern</dt>
          <dd>
            <code>{p.namePattern}</code>
          </dd>
        </div>
        <div>
          <dt>Space saved</dt>
          <dd>{bytes(p.space.savedBytes)}</dd>
        </div>
        <div>
          <dt>Subsystems</dt>
          <dd>{p.subsystems.map((s) => s.nqn).join(', ') || '–'}</dd>
        </div>
      </dl>

      <h2>Desktops</h2>
      {/* While a shrink runs, more desktops can be available than the size asked for: the bar's maximum
          never drops below its value. */}
      <ProgressBar label="Desktops available" value={counts.available} max={Math.max(targetSize, counts.available)} text={`${counts.available} of ${Math.max(targetSize, counts.available)} available`} />
      {running ? (
        <p class="muted" role="status">
          {running.kind.replace('desktop-pool.', '')}: {running.phase || running.state} {running.progress.done}/{running.progress.total}
        </p>
      ) : null}
      <ul class="legend" aria-label="Desktops by state">
        {DESKTOP_STATES.map((s) => (
          <li key={s} class={`state-${s}`} data-state={s}>
            <span class="count">{counts[s]}</span> {s}
          </li>
        ))}
      </ul>
      <DesktopGrid model={live.model} version={live.version} onCells={(n) => (poolPagePerf.domCells = n)} />

      <h2>Actions</h2>
      <Alert message={act.error} />
      {notice ? <p role="status">{notice}</p> : null}
      <div class="two">
        <form
          class="panel"
          aria-label="Grow or shrink"
          onSubmit={(e) => {
            e.preventDefault();
            const n = Number(size ?? p.size);
            submit(`Resizing to ${n} desktops.`, () => api('PATCH', `/desktop-pools/${p.id}`, { size: n }));
          }}
        >
          <Field label="Size">
            <input name="size" type="number" min={0} max={100000} required value={size ?? String(p.size)} onInput={(e) => setSize(e.currentTarget.value)} />
          </Field>
          <button type="submit" disabled={act.busy}>
            Resize
          </button>
        </form>
        <form
          class="panel"
          aria-label="Recompose"
          onSubmit={(e) => {
            e.preventDefault();
            submit('Recompose started.', () => api('POST', `/desktop-pools/${p.id}/recompose`, { replicaId }));
          }}
        >
          <Field label="Replica">
            <select name="replicaId" required value={replicaId} onChange={(e) => setReplicaId(e.currentTarget.value)}>
              <option value="">Choose a newer replica…</option>
              {others.map((r) => (
                <option key={r.id} value={r.id}>
                  {r.templateName} v{r.version}
                </option>
              ))}
            </select>
          </Field>
          <button type="submit" disabled={act.busy || !replicaId}>
            Recompose
          </button>
        </form>
      </div>
      <div class="row">
        <button type="button" disabled={act.busy} onClick={() => submit('Refresh started: every desktop returns to the replica.', () => api('POST', `/desktop-pools/${p.id}/refresh`, {}))}>
          Refresh
        </button>
        {/* Hidden while its confirmation is open, so "Delete" names one button at a time. */}
        {confirmDelete ? null : (
          <button type="button" id="delete-pool" class="danger" disabled={act.busy} onClick={() => setConfirmDelete(true)}>
            Delete
          </button>
        )}
      </div>

      <Schedules poolId={p.id} />

      <h2>Jobs</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Kind</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
            <th scope="col">Errors</th>
          </tr>
        </thead>
        <tbody>
          {job.history.map((j) => (
            <tr key={j.id}>
              <td>{j.kind.replace('desktop-pool.', '')}</td>
              <td>
                <StateBadge state={j.state} />
              </td>
              <td>
                {j.progress.done}/{j.progress.total}
              </td>
              <td>{j.error ? j.error.message : j.results.filter((r) => r.status !== 'succeeded').map((r) => `${r.item}: ${r.error ?? r.status}`).join('; ') || '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>

      <ConfirmDialog
        open={confirmDelete}
        returnFocusId="delete-pool"
        title={`Delete pool ${p.name}?`}
        message={<p>All {live.model.names.length} desktops of {p.name} and their clones will be deleted. This cannot be undone.</p>}
        confirmLabel="Delete"
        onCancel={() => setConfirmDelete(false)}
        onConfirm={() => {
          setConfirmDelete(false);
          void act.run(async () => {
            await api('DELETE', `/desktop-pools/${p.id}`);
            navigate('/pools');
          });
        }}
      />
    </section>
  );
}
