// What a scheduled run needs when it resets a desktop that is in use (inUse: force): the VM on the host
// must be restarted so it does not keep running on the disk it had before.
import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema.ts';
import type { DesktopHooks } from '../desktop-pools/desktop-hooks.ts';
import type { EventBus } from '../events/event-bus.ts';

export interface DesktopRestarter {
  /** Restarts the desktop's VM on its host; throws when that could not be done. */
  restart(poolId: string, desktopName: string): Promise<void>;
}

/**
 * Until hypervisor hooks can restart a VM themselves, the request is published as a
 * `desktop.restart-requested` event for whatever drives the hosts (a broker, an operator's script).
 */
export class EventDesktopRestarter implements DesktopRestarter {
  #events: EventBus;
  constructor(events: EventBus) {
    this.#events = events;
  }
  async restart(poolId: string, desktopName: string): Promise<void> {
    await this.#events.publish('desktop.restart-requested', { poolId, name: desktopName, reason: 'reset while in use by a scheduled run' });
  }
}

/**
 * With hypervisor hooks: the event is published as above, and a desktop attached on a linux-nvme host
 * gets its attach hook run again, which checks the subsystem connection and the /dev/thicket link. A
 * libvirt desktop needs nothing more: its VM was powered off around the reset and started again.
 */
export class HookDesktopRestarter implements DesktopRestarter {
  #events: EventDesktopRestarter;
  #db: Kysely<Database>;
  #hooks: DesktopHooks;
  constructor(db: Kysely<Database>, events: EventBus, hooks: DesktopHooks) {
    this.#db = db;
    this.#events = new EventDesktopRestarter(events);
    this.#hooks = hooks;
  }
  async restart(poolId: string, desktopName: string): Promise<void> {
    await this.#events.restart(poolId, desktopName);
    const pool = await this.#db.selectFrom('desktop_pools').selectAll().where('id', '=', poolId).executeTakeFirst();
    const desktop = await this.#db.selectFrom('desktops').selectAll().where('pool_id', '=', poolId).where('name', '=', desktopName).executeTakeFirst();
    if (!pool || !desktop?.host_id || !desktop.attached) return;
    const host = await this.#db.selectFrom('hosts').select('hook_type').where('id', '=', desktop.host_id).executeTakeFirst();
    if (host?.hook_type !== 'linux-nvme') return;
    const outcome = await this.#hooks.restartDesktop(pool, desktop);
    if (!outcome.ok) throw new Error(`${outcome.code}: ${outcome.error}`);
  }
}
