// What a scheduled run needs when it resets a desktop that is in use (inUse: force): the VM on the host
// must be restarted so it does not keep running on the disk it had before.
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
