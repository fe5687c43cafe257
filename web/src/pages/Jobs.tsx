import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import { Alert, Field, ProgressBar, StateBadge } from '../components/widgets.tsx';
import { when } from '../format.ts';
import { useResource } from '../resource.ts';
import type { DesktopPool, Job, Replica } from '../types.ts';

const STATES = ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];

function JobDetails(props: { job: Job }) {
  const j = props.job;
  const problems = j.results.filter((r) => r.status !== 'succeeded');
  // A failure is readable without a click: the job's error outside the disclosure, and the per-item
  // list open for failed jobs.
  return (
    <>
      {j.error ? (
        <p class="invalid">
          {j.error.code}: {j.error.message}
        </p>
      ) : null}
      <details open={j.state === 'failed'}>
      <summary>{problems.length ? `${problems.length} item(s) not succeeded` : `${j.results.length} item result(s)`}</summary>
      <ul class="results">
        {(problems.length ? problems : j.results).slice(0, 200).map((r, i) => (
          <li key={`${r.item}-${i}`}>
            <code>{r.item}</code> {r.status}
            {r.error ? `: ${r.error}` : ''}
          </li>
        ))}
      </ul>
      </details>
    </>
  );
}

const ACTIONS: Record<string, string> = {
  'desktop-pool.resize': 'Resize',
  'desktop-pool.refresh': 'Refresh',
  'desktop-pool.recompose': 'Recompose',
  'desktop-pool.delete': 'Delete',
  'desktop-pool.scheduled-run': 'Scheduled',
  'replica.promote': 'Promote',
  'replica.verify': 'Verify',
  'replica.move': 'Move',
};

/** What a job does, in words, and to what: "Provision pool lab (20 desktops)", "Verify replica golden v2". */
export function describeJob(j: Job, pools: Map<string, string>, replicas: Map<string, string>): string {
  const p = j.payload;
  let action = ACTIONS[j.kind] ?? j.kind;
  if (j.kind === 'desktop-pool.resize') action = p.provision === true ? 'Provision' : 'Resize';
  if (j.kind === 'desktop-pool.scheduled-run' && typeof p.action === 'string') action = `Scheduled ${p.action}`;
  if (j.kind.startsWith('desktop-pool.')) {
    const id = String(p.poolId ?? j.resourceId ?? '');
    const name = pools.get(id) ?? (typeof p.poolName === 'string' ? p.poolName : id.slice(0, 8));
    const size = j.kind === 'desktop-pool.resize' && typeof p.size === 'number' ? ` (${p.size} desktop${p.size === 1 ? '' : 's'})` : '';
    return `${action} pool ${name}${size}`;
  }
  if (j.kind.startsWith('replica.')) {
    const id = String(p.replicaId ?? j.resourceId ?? '');
    return `${action} replica ${replicas.get(id) ?? id.slice(0, 8)}`;
  }
  return action;
}

export function Jobs() {
  const [state, setState] = useState('');
  const jobs = useResource(() => api<Job[]>('GET', `/jobs?limit=200${state ? `&state=${state}` : ''}`), [state], ['job.']);
  // Names for the jobs' resources (a deleted pool's name comes from the job itself).
  const pools = useResource(() => api<DesktopPool[]>('GET', '/desktop-pools'), [], ['desktop-pool.']);
  const replicas = useResource(() => api<Replica[]>('GET', '/replicas'), [], ['replica.']);
  const poolNames = new Map((pools.data ?? []).map((p) => [p.id, p.name]));
  const replicaNames = new Map((replicas.data ?? []).map((r) => [r.id, `${r.templateName} v${r.version}`]));
  return (
    <section>
      <h1>Jobs</h1>
      <div class="row">
        <Field label="State">
          <select value={state} onChange={(e) => setState(e.currentTarget.value)}>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {s || 'any'}
              </option>
            ))}
          </select>
        </Field>
      </div>
      <Alert message={jobs.error} />
      <table>
        <thead>
          <tr>
            <th scope="col">Job</th>
            <th scope="col">Kind</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
            <th scope="col">Created</th>
            <th scope="col">Finished</th>
            <th scope="col">Results and errors</th>
          </tr>
        </thead>
        <tbody>
          {(jobs.data ?? []).map((j) => (
            <tr key={j.id}>
              <td>{describeJob(j, poolNames, replicaNames)}</td>
              <td>{j.kind}</td>
              <td>
                <StateBadge state={j.state} />
              </td>
              <td class="wide">
                {j.state === 'running' ? <ProgressBar label={`${j.kind} progress`} value={j.progress.done} max={j.progress.total} /> : `${j.progress.done}/${j.progress.total}`}
              </td>
              <td>{when(j.createdAt)}</td>
              <td>{when(j.finishedAt)}</td>
              <td>{j.error || j.results.length ? <JobDetails job={j} /> : '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {jobs.data?.length === 0 ? <p class="muted">No jobs.</p> : null}
    </section>
  );
}
