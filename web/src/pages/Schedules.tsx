// The pool page's schedules: refresh or recompose on a cron schedule, in waves.
import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import { Alert, ConfirmDialog, Field, StateBadge } from '../components/widgets.tsx';
import { when } from '../format.ts';
import { useAction, useResource } from '../resource.ts';
import type { Schedule, ScheduleRun } from '../types.ts';

function RunSummary(props: { run: ScheduleRun }) {
  const r = props.run;
  return (
    <>
      <StateBadge state={r.state} /> {when(r.finishedAt ?? r.startedAt ?? r.scheduledFor)}
      {r.trigger === 'catch-up' ? <span class="muted"> (catch-up)</span> : null}
      <div class="muted">
        {r.desktops.succeeded} done, {r.desktops.failed} failed, {r.desktops.skipped} skipped
      </div>
      {r.skippedReason ? <div class="muted">{r.skippedReason}</div> : null}
      {r.error ? <div class="invalid">{r.error.message}</div> : null}
    </>
  );
}

/** The last runs of one schedule, loaded when opened. */
function RunHistory(props: { poolId: string; scheduleId: string }) {
  const runs = useResource(() => api<ScheduleRun[]>('GET', `/desktop-pools/${props.poolId}/schedules/${props.scheduleId}/runs`), [props.poolId, props.scheduleId], ['schedule.']);
  return (
    <>
      <Alert message={runs.error} />
      <ul class="results">
        {(runs.data ?? []).slice(0, 20).map((r) => (
          <li key={r.scheduledFor}>
            {when(r.scheduledFor)}: <RunSummary run={r} />
          </li>
        ))}
        {runs.data?.length === 0 ? <li class="muted">No runs yet.</li> : null}
      </ul>
    </>
  );
}

const LOCAL_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

export function Schedules(props: { poolId: string }) {
  const list = useResource(() => api<Schedule[]>('GET', `/desktop-pools/${props.poolId}/schedules`), [props.poolId], ['schedule.', 'job.succeeded', 'job.failed']);
  const [cron, setCron] = useState('0 0 3 * * *');
  const [timezone, setTimezone] = useState(LOCAL_TZ);
  const [action, setAction] = useState<Schedule['action']>('refresh');
  const [waveSize, setWaveSize] = useState('50');
  const [inUse, setInUse] = useState<Schedule['inUse']>('skip');
  const [deadline, setDeadline] = useState('60');
  const [maxFailures, setMaxFailures] = useState('0');
  const [deleting, setDeleting] = useState<Schedule | undefined>();
  const create = useAction();
  const change = useAction();

  return (
    <>
      <h2 id="schedules">Schedules</h2>
      <Alert message={list.error ?? change.error} />
      <table aria-labelledby="schedules">
        <thead>
          <tr>
            <th scope="col">Cron</th>
            <th scope="col">Action</th>
            <th scope="col">Waves</th>
            <th scope="col">In-use desktops</th>
            <th scope="col">Next run</th>
            <th scope="col">Last run</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(list.data ?? []).map((s) => (
            <tr key={s.id}>
              <td>
                <code>{s.cron}</code> <span class="muted">{s.timezone}</span>
              </td>
              <td>{s.action}</td>
              <td>
                {s.waveSize}
                <div class="muted">≤ {s.maxFailuresPerWave} failure(s)</div>
              </td>
              <td>
                {s.inUse}
                {s.inUse === 'wait' && s.waitDeadlineMinutes ? ` (≤ ${s.waitDeadlineMinutes} min)` : ''}
              </td>
              <td>{s.enabled ? when(s.nextRunAt) : 'disabled'}</td>
              <td>
                {s.lastRun ? <RunSummary run={s.lastRun} /> : '–'}
                <details>
                  <summary>History</summary>
                  <RunHistory poolId={props.poolId} scheduleId={s.id} />
                </details>
              </td>
              <td class="actions">
                <button
                  type="button"
                  aria-label={`${s.enabled ? 'Disable' : 'Enable'} schedule ${s.cron}`}
                  onClick={() =>
                    void change.run(async () => {
                      await api('PATCH', `/desktop-pools/${props.poolId}/schedules/${s.id}`, { enabled: !s.enabled });
                      list.reload();
                    })
                  }
                >
                  {s.enabled ? 'Disable' : 'Enable'}
                </button>
                {deleting ? null : (
                  <button type="button" id={`remove-schedule-${s.id}`} class="danger" aria-label={`Remove schedule ${s.cron}`} onClick={() => setDeleting(s)}>
                    Remove
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.data?.length === 0 ? <p class="muted">No schedules: this pool is refreshed only when you ask.</p> : null}
      <form
        class="panel"
        aria-label="New schedule"
        onSubmit={(e) => {
          e.preventDefault();
          void create.run(async () => {
            await api('POST', `/desktop-pools/${props.poolId}/schedules`, {
              cron: cron.trim(),
              timezone: timezone.trim(),
              action,
              waveSize: Number(waveSize),
              maxFailuresPerWave: Number(maxFailures),
              inUse,
              ...(inUse === 'wait' ? { waitDeadlineMinutes: Number(deadline) } : {}),
              enabled: true,
            });
            list.reload();
          });
        }}
      >
        <div class="row">
          <Field label="Cron" hint="With seconds: sec min hour day month weekday.">
            <input name="cron" required value={cron} onInput={(e) => setCron(e.currentTarget.value)} />
          </Field>
          <Field label="Time zone">
            <input name="timezone" required value={timezone} onInput={(e) => setTimezone(e.currentTarget.value)} />
          </Field>
          <Field label="Action">
            <select name="action" value={action} onChange={(e) => setAction(e.currentTarget.value as Schedule['action'])}>
              <option value="refresh">refresh</option>
              <option value="recompose-latest">recompose to the latest version</option>
            </select>
          </Field>
          <Field label="Desktops per wave">
            <input name="waveSize" type="number" min={1} required value={waveSize} onInput={(e) => setWaveSize(e.currentTarget.value)} />
          </Field>
          <Field label="Failures allowed per wave" hint="More stops the run.">
            <input name="maxFailuresPerWave" type="number" min={0} required value={maxFailures} onInput={(e) => setMaxFailures(e.currentTarget.value)} />
          </Field>
          <Field label="In-use desktops">
            <select name="inUse" value={inUse} onChange={(e) => setInUse(e.currentTarget.value as Schedule['inUse'])}>
              <option value="skip">skip until the next run</option>
              <option value="wait">wait until released</option>
              <option value="force">force (restart the VM)</option>
            </select>
          </Field>
          {inUse === 'wait' ? (
            <Field label="Wait deadline (minutes)">
              <input name="waitDeadlineMinutes" type="number" min={1} required value={deadline} onInput={(e) => setDeadline(e.currentTarget.value)} />
            </Field>
          ) : null}
        </div>
        <Alert message={create.error} />
        <button type="submit" disabled={create.busy}>
          Add schedule
        </button>
      </form>
      <ConfirmDialog
        open={deleting !== undefined}
        returnFocusId={deleting ? `remove-schedule-${deleting.id}` : undefined}
        title="Remove schedule?"
        message={<p>The schedule {deleting?.cron} stops; runs already started finish.</p>}
        confirmLabel="Remove"
        onCancel={() => setDeleting(undefined)}
        onConfirm={() => {
          const s = deleting!;
          setDeleting(undefined);
          void change.run(async () => {
            await api('DELETE', `/desktop-pools/${props.poolId}/schedules/${s.id}`);
            list.reload();
          });
        }}
      />
    </>
  );
}
