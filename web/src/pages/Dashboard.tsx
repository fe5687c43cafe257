import { api } from '../api.ts';
import { Alert, Meter, ProgressBar } from '../components/widgets.tsx';
import { bytes } from '../format.ts';
import { useResource } from '../resource.ts';
import type { Job, Replica, StoragePool } from '../types.ts';

export function Dashboard() {
  const pools = useResource(() => api<StoragePool[]>('GET', '/storage-pools'), [], ['storage-pool.', 'replica.', 'clone.', 'desktop-pool.', 'job.succeeded', 'job.failed']);
  const replicas = useResource(() => api<Replica[]>('GET', '/replicas'), [], ['replica.', 'desktop-pool.', 'clone.', 'job.succeeded']);
  const jobs = useResource(() => api<Job[]>('GET', '/jobs?state=queued,running&limit=50'), [], ['job.']);
  const saved = (replicas.data ?? []).reduce((sum, r) => sum + r.sharedBytes, 0);
  const clones = (replicas.data ?? []).reduce((sum, r) => sum + r.cloneCount, 0);

  return (
    <section>
      <h1>Dashboard</h1>
      <Alert message={pools.error ?? replicas.error ?? jobs.error} />
      <div class="cards">
        <div class="card">
          <h2>Space saved by cloning</h2>
          <p class="big" data-testid="space-saved">
            {bytes(saved)}
          </p>
          <p class="muted">
            {clones} clone(s) read these bytes from {replicas.data?.length ?? 0} replica(s) instead of holding copies.
          </p>
        </div>
      </div>
      <h2>Storage pools</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Tier</th>
            <th scope="col">Capacity</th>
            <th scope="col">Replicas</th>
            <th scope="col">Clones</th>
          </tr>
        </thead>
        <tbody>
          {(pools.data ?? []).map((p) => (
            <tr key={p.id}>
              <td>{p.name}</td>
              <td>{p.tier}</td>
              <td class="wide">
                <Meter label={`${p.name} capacity used`} value={p.usage.usedBytes} max={p.usage.capacityBytes} text={`${bytes(p.usage.usedBytes)} of ${bytes(p.usage.capacityBytes)} used`} />
              </td>
              <td>{p.replicaCount}</td>
              <td>{p.cloneCount}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Running jobs</h2>
      {jobs.data && jobs.data.length === 0 ? <p class="muted">No jobs are queued or running.</p> : null}
      <ul class="jobs">
        {(jobs.data ?? []).map((j) => (
          <li key={j.id}>
            <span>
              {j.kind} <span class="muted">{j.phase || j.state}</span>
            </span>
            <ProgressBar label={`${j.kind} progress`} value={j.progress.done} max={j.progress.total} />
          </li>
        ))}
      </ul>
    </section>
  );
}
