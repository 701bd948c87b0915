// Who hears about a flooding source: the contact whose network is the longest prefix holding it, as
// the SFDS paper (§3.2) looked the source up in its Rwhois database of routes and contacts. Pure; built once
// per policy snapshot from the validated contacts (inline and from the contacts file).
import type { NoticeContact } from '../config/schema.js';
import { CidrList, parseCidr } from '../policy/cidr-list.js';

export interface ContactMatch {
  /** The contact's network, canonical "network/length". */
  network: string;
  contact: NoticeContact;
}

export class ContactDirectory {
  private readonly networks: CidrList;
  private readonly byNetwork = new Map<string, NoticeContact>();

  /** Contacts come from a validated policy: one per network, every CIDR parsable. */
  constructor(contacts: readonly NoticeContact[]) {
    const ranges = contacts.map((contact) => {
      const range = parseCidr(contact.cidr);
      this.byNetwork.set(range.text, contact);
      return range;
    });
    this.networks = new CidrList(ranges);
  }

  get size(): number {
    return this.byNetwork.size;
  }

  /** The most specific network holding the address, with its contact; IPv4-mapped IPv6 counts as IPv4. */
  lookup(address: string): ContactMatch | undefined {
    const network = this.networks.match(address);
    const contact = network === undefined ? undefined : this.byNetwork.get(network);
    return network === undefined || contact === undefined ? undefined : { network, contact };
  }
}
