/**
 * Which addresses POST /admin/workers may make the coordinator dial (coordinator.dial.allow).
 * An entry is a host name (`gpu-3.internal`), `host:port`, or a CIDR block (`10.0.0.0/8`,
 * `fd00::/8`). Names are matched as written, never resolved: a name in a request must be
 * listed itself, and an IP address must fall in a block or be listed.
 */

import { BlockList, isIP } from 'node:net';
import { type HostPort, formatHostPort } from '../util/address.ts';

export class DialAllowList {
  readonly #blocks = new BlockList();
  readonly #exact = new Set<string>();

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const cidr = /^(.+)\/(\d{1,3})$/.exec(entry);
      const family = cidr ? isIP(cidr[1]!) : 0;
      if (cidr && family !== 0) {
        this.#blocks.addSubnet(cidr[1]!, Number(cidr[2]), family === 6 ? 'ipv6' : 'ipv4');
      } else {
        this.#exact.add(entry.toLowerCase());
      }
    }
  }

  allows(address: HostPort): boolean {
    const host = address.host.toLowerCase();
    if (this.#exact.has(host) || this.#exact.has(formatHostPort({ host, port: address.port }))) return true;
    const family = isIP(host);
    return family !== 0 && this.#blocks.check(host, family === 6 ? 'ipv6' : 'ipv4');
  }
}
