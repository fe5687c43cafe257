// Desktops on hypervisor hosts: placement of a pool's desktops across its SSH hosts, and the attach,
// detach, stop/start and restart hooks run for them, with each outcome written to the desktop row (a
// failed attach leaves the desktop `failed` with the hook's stderr, never `available`).
import { sql } from 'kysely';
import type { DesktopPoolRow, DesktopRow, HostRow } from '../../db/schema.ts';
import type { HookDesktop, HookOutcome, HookRunner } from '../../hooks/hook-runner.ts';
import type { HookAction } from '../../hooks/render.ts';
import { AppError } from '../../errors.ts';
import type { DesktopOps } from './desktop-ops.ts';

export interface DesktopHookResult {
  desktop: DesktopRow;
  outcome: HookOutcome;
}

export class DesktopHooks {
  readonly runner: HookRunner;
  #ops: DesktopOps;

  constructor(ops: DesktopOps, runner: HookRunner) {
    this.#ops = ops;
    this.runner = runner;
  }

  /** The pool's hosts that run hooks (hosts without SSH only get NVMe access). */
  async hookHosts(poolId: string): Promise<HostRow[]> {
    const ids = await this.#ops.pools.hostIds(this.#ops.db, poolId);
    return (await this.#ops.hosts.getMany(this.#ops.db, ids)).filter((h) => h.ssh_address && h.hook_type).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** How many more desktops the pool's hook hosts can take (Infinity without limits). */
  async freeCapacity(poolId: string): Promise<number> {
    const hosts = await this.hookHosts(poolId);
    const counts = await this.#ops.hosts.desktopCounts(this.#ops.db, hosts.map((h) => h.id));
    let free = 0;
    for (const h of hosts) free += h.max_desktops === null ? Infinity : Math.max(0, h.max_desktops - (counts.get(h.id) ?? 0));
    return free;
  }

  /**
   * Gives each desktop without a host one: the pool's hook host with the fewest of this pool's desktops
   * (then the fewest overall), below its maxDesktops. Throws HOSTS_FULL when no host has room.
   */
  async place(pool: DesktopPoolRow, desktops: DesktopRow[]): Promise<DesktopRow[]> {
    const ops = this.#ops;
    const unplaced = desktops.filter((d) => !d.host_id);
    if (unplaced.length === 0) return desktops;
    const hosts = await this.hookHosts(pool.id);
    if (hosts.length === 0) return desktops;
    // Counting and placing under a lock on the hosts: two pools growing on one host at the same time
    // (two jobs, or two processes) cannot both take its last free places.
    return ops.db.transaction().execute(async (trx) => {
      await sql`SELECT id FROM hosts WHERE id = ANY(${hosts.map((h) => h.id)}::uuid[]) ORDER BY id FOR UPDATE`.execute(trx);
      const total = await ops.hosts.desktopCounts(trx, hosts.map((h) => h.id));
      const mine = new Map<string, number>();
      for (const r of await trx.selectFrom('desktops').select(['host_id', sql<number>`count(*)::int4`.as('n')]).where('pool_id', '=', pool.id).where('host_id', 'is not', null).groupBy('host_id').execute()) {
        mine.set(r.host_id!, Number(r.n));
      }
      // A host exposes desktops as /dev/thicket/<name>: two pools' desktops of the same name cannot share one.
      const taken = new Set(
        (await trx.selectFrom('desktops').select(['host_id', 'name']).where('host_id', 'in', hosts.map((h) => h.id)).where('pool_id', '!=', pool.id).execute()).map((r) => `${r.host_id}/${r.name}`),
      );
      const byHost = new Map<string, string[]>();
      const placed = new Map<string, string>();
      for (const d of unplaced) {
        let best: HostRow | undefined;
        let nameClash = false;
        for (const h of hosts) {
          const t = total.get(h.id) ?? 0;
          if (h.max_desktops !== null && t >= h.max_desktops) continue;
          if (taken.has(`${h.id}/${d.name}`)) {
            nameClash = true;
            continue;
          }
          if (!best) {
            best = h;
            continue;
          }
          const bm = mine.get(best.id) ?? 0;
          const hm = mine.get(h.id) ?? 0;
          if (hm < bm || (hm === bm && t < (total.get(best.id) ?? 0))) best = h;
        }
        if (!best && nameClash) {
          throw new AppError('NAME_TAKEN', `desktop name "${d.name}" is already used on the pool's hosts by another pool (hosts expose desktops as /dev/thicket/<name>); choose another name pattern`);
        }
        if (!best) throw new AppError('HOSTS_FULL', `the hosts of pool ${pool.name} have no room for more desktops (maxDesktops reached)`);
        total.set(best.id, (total.get(best.id) ?? 0) + 1);
        mine.set(best.id, (mine.get(best.id) ?? 0) + 1);
        const list = byHost.get(best.id);
        if (list) list.push(d.id);
        else byHost.set(best.id, [d.id]);
        placed.set(d.id, best.id);
      }
      for (const [hostId, ids] of byHost) await trx.updateTable('desktops').set({ host_id: hostId }).where('id', 'in', ids).execute();
      return desktops.map((d) => (placed.has(d.id) ? { ...d, host_id: placed.get(d.id)! } : d));
    });
  }

  async #targets(pool: DesktopPoolRow, desktops: DesktopRow[]): Promise<Map<string, HookDesktop>> {
    const ops = this.#ops;
    const subs = new Map((await ops.pools.subsystems(ops.db, pool.id)).map((s) => [s.subsystem_id, s.nqn]));
    const cloneIds = desktops.map((d) => d.clone_id);
    const uuids = new Map(
      cloneIds.length ? (await ops.db.selectFrom('namespaces').select(['clone_id', 'uuid']).where('clone_id', 'in', cloneIds).execute()).map((n) => [n.clone_id, n.uuid]) : [],
    );
    const out = new Map<string, HookDesktop>();
    for (const d of desktops) {
      out.set(d.id, {
        poolId: pool.id,
        poolName: pool.name,
        desktopId: d.id,
        desktop: d.name,
        nsUuid: uuids.get(d.clone_id) ?? d.clone_id,
        subsystemNqn: subs.get(d.subsystem_id) ?? '',
        vm: { vcpus: pool.vm_vcpus, memoryMiB: pool.vm_memory_mib, network: pool.vm_network },
      });
    }
    return out;
  }

  /** Runs one action for each desktop (on its host, all hosts in parallel within the runner's limits). */
  async #runAll(pool: DesktopPoolRow, action: HookAction, desktops: DesktopRow[], onEach?: () => void, signal?: AbortSignal): Promise<DesktopHookResult[]> {
    const withHost = desktops.filter((d) => d.host_id);
    if (withHost.length === 0) return [];
    const hosts = new Map((await this.#ops.hosts.getMany(this.#ops.db, [...new Set(withHost.map((d) => d.host_id!))])).map((h) => [h.id, h]));
    const targets = await this.#targets(pool, withHost);
    return Promise.all(
      withHost.map(async (d) => {
        const host = hosts.get(d.host_id!);
        // With `signal` aborted (a cancelled job) the runner starts no more hooks: outcome CANCELLED.
        const outcome: HookOutcome = host
          ? await this.runner.run(host, action, targets.get(d.id)!, signal)
          : { ok: false, code: 'HOST_NOT_FOUND', error: `host ${d.host_id} no longer exists`, stdout: '', transient: false, attempts: 0 };
        onEach?.();
        return { desktop: d, outcome };
      }),
    );
  }

  /** Attaches desktops on their hosts: success makes them available, failure failed with the stderr. */
  async attach(pool: DesktopPoolRow, desktops: DesktopRow[], onEach?: () => void, signal?: AbortSignal): Promise<DesktopHookResult[]> {
    const ops = this.#ops;
    const results = await this.#runAll(pool, 'attach', desktops, onEach, signal);
    const ok = results.filter((r) => r.outcome.ok).map((r) => r.desktop);
    if (ok.length) await ops.db.updateTable('desktops').set({ attached: true, error: null }).where('id', 'in', ok.map((d) => d.id)).execute();
    await ops.setStates(pool.id, ok, 'available');
    // Skipped because the job was cancelled or is stopping: still provisioning (a resumed run attaches it,
    // a rollback removes it), not failed.
    for (const r of results) if (!r.outcome.ok && r.outcome.code !== 'CANCELLED') await this.#fail(pool.id, r.desktop, r.outcome);
    return results;
  }

  /**
   * Detaches desktops placed on hosts; those whose hook failed stay attached (and are returned as failed).
   * Not only those marked attached: an attach that failed half-way (linked, defined, but the VM did not
   * start) left things on the host too, and the detach hooks are safe to run for what is not there.
   */
  async detach(pool: DesktopPoolRow, desktops: DesktopRow[]): Promise<DesktopHookResult[]> {
    const ops = this.#ops;
    const results = await this.#runAll(pool, 'detach', desktops.filter((d) => d.host_id));
    const ok = results.filter((r) => r.outcome.ok).map((r) => r.desktop.id);
    if (ok.length) await ops.db.updateTable('desktops').set({ attached: false }).where('id', 'in', ok).execute();
    return results;
  }

  async #fail(poolId: string, d: DesktopRow, outcome: HookOutcome): Promise<void> {
    if (outcome.ok) return;
    const error = `${outcome.code}: ${outcome.error}`.slice(0, 8000);
    await this.#ops.db.updateTable('desktops').set({ error }).where('id', '=', d.id).execute();
    await this.#ops.setStates(poolId, [d], 'failed');
  }

  /**
   * Resets clones with their VMs powered off: libvirt VMs that were running are stopped first and
   * started again afterwards (linux-nvme has no VM; its link stays valid because the namespace does).
   * A desktop whose VM cannot be stopped is not reset. Returns the failed clone ids with the reason.
   */
  async aroundReset(pool: DesktopPoolRow, batch: DesktopRow[], reset: (desktops: DesktopRow[]) => Promise<Map<string, string>>): Promise<Map<string, string>> {
    const failed = new Map<string, string>();
    const vms = batch.filter((d) => d.attached);
    const stops = await this.#runAll(pool, 'stop', vms);
    for (const r of stops) if (!r.outcome.ok) failed.set(r.desktop.clone_id, `${r.outcome.code}: ${r.outcome.error}`);
    const wasRunning = stops.filter((r) => r.outcome.ok && r.outcome.stdout.includes('was-running')).map((r) => r.desktop);
    for (const [id, why] of await reset(batch.filter((d) => !failed.has(d.clone_id)))) failed.set(id, why);
    const starts = await this.#runAll(pool, 'start', wasRunning.filter((d) => !failed.has(d.clone_id)));
    for (const r of starts) if (!r.outcome.ok) failed.set(r.desktop.clone_id, `${r.outcome.code}: ${r.outcome.error}`);
    for (const d of batch) {
      const why = failed.get(d.clone_id);
      if (why) await this.#ops.db.updateTable('desktops').set({ error: why.slice(0, 8000) }).where('id', '=', d.id).execute();
    }
    return failed;
  }

  /**
   * Restarts a desktop's VM on its host, e.g. after its clone was reset while in use (schedules with
   * force): libvirt power-cycles the domain (destroy if running, then start); linux-nvme has no VM and
   * re-runs its attach, which only checks that the subsystem is connected and the link is valid.
   * Changes no desktop state; returns the hook's outcome (ok for a desktop on no hook host).
   */
  async restartDesktop(pool: DesktopPoolRow, desktop: DesktopRow): Promise<HookOutcome> {
    if (!desktop.host_id || !desktop.attached) return { ok: true, stdout: '', attempts: 0 };
    const [r] = await this.#runAll(pool, 'restart', [desktop]);
    return r.outcome;
  }
}
