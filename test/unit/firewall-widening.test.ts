// The evidence the firewall asks for before it drops a whole prefix (more than the screen's k suspects):
// distinct offending sources, and the share of the prefix's blocks they fall in, with the defaults' numbers.
import { describe, expect, it } from 'vitest';
import {
  blocksIn,
  firewallMayWiden,
  provenNetworkLengths,
  requiredBlocks,
  shareBlockBits,
  widerThanSource,
} from '../../src/detect/firewall-widening.js';

const DEFAULTS = { minSources: 16, minSharePercentV4: 10, minSharePercentV6: 0.05 };

describe('firewall widening', () => {
  it('counts a prefix in the blocks of the next ladder step, never finer than a source', () => {
    expect([shareBlockBits('ipv4', 24), blocksIn('ipv4', 24)]).toEqual([32, 256]);
    expect([shareBlockBits('ipv4', 16), blocksIn('ipv4', 16)]).toEqual([24, 256]);
    expect([shareBlockBits('ipv4', 20), blocksIn('ipv4', 20)]).toEqual([24, 16]);
    expect([shareBlockBits('ipv4', 8), blocksIn('ipv4', 8)]).toEqual([16, 256]);
    expect([shareBlockBits('ipv6', 48), blocksIn('ipv6', 48)]).toEqual([64, 65_536]);
    expect([shareBlockBits('ipv6', 56), blocksIn('ipv6', 56)]).toEqual([64, 256]);
    expect(widerThanSource('ipv4', 24)).toBe(true);
    expect(widerThanSource('ipv4', 32)).toBe(false);
    expect(widerThanSource('ipv6', 64)).toBe(false);
    expect(provenNetworkLengths('ipv4')).toEqual([24, 16]);
    expect(provenNetworkLengths('ipv6')).toEqual([48]);
  });

  it('asks the defaults for 26 of a /24’s addresses, 26 of a /16’s /24s and 33 of a /48’s /64s', () => {
    expect(requiredBlocks('ipv4', 24, DEFAULTS)).toBe(26);
    expect(requiredBlocks('ipv4', 16, DEFAULTS)).toBe(26);
    expect(requiredBlocks('ipv6', 48, DEFAULTS)).toBe(33);
    // A share that lands on a whole number is not rounded up past it; a share of 0 still needs one block.
    expect(requiredBlocks('ipv4', 24, { ...DEFAULTS, minSharePercentV4: 12.5 })).toBe(32);
    expect(requiredBlocks('ipv4', 24, { ...DEFAULTS, minSharePercentV4: 0 })).toBe(1);
  });

  it('widens only with enough sources AND enough of the prefix covered', () => {
    // The screen's k = 5: five addresses speaking HTTP in one /24.
    expect(firewallMayWiden('ipv4', 24, { sources: 5, blocksCovered: 5 }, DEFAULTS)).toBe(false);
    expect(firewallMayWiden('ipv4', 24, { sources: 25, blocksCovered: 25 }, DEFAULTS)).toBe(false);
    expect(firewallMayWiden('ipv4', 24, { sources: 26, blocksCovered: 26 }, DEFAULTS)).toBe(true);
    // Five suspect /24s of 25 addresses make the screen's /16; the firewall wants 26 /24s with an offender.
    expect(firewallMayWiden('ipv4', 16, { sources: 125, blocksCovered: 5 }, DEFAULTS)).toBe(false);
    expect(firewallMayWiden('ipv4', 16, { sources: 26, blocksCovered: 26 }, DEFAULTS)).toBe(true);
    // Enough of a /20's sixteen /24s covered, but fewer sources than minSources.
    expect(firewallMayWiden('ipv4', 20, { sources: 8, blocksCovered: 8 }, DEFAULTS)).toBe(false);
    expect(firewallMayWiden('ipv4', 20, { sources: 16, blocksCovered: 2 }, DEFAULTS)).toBe(true);
    expect(firewallMayWiden('ipv6', 48, { sources: 32, blocksCovered: 32 }, DEFAULTS)).toBe(false);
    expect(firewallMayWiden('ipv6', 48, { sources: 33, blocksCovered: 33 }, DEFAULTS)).toBe(true);
  });

  it('needs no evidence for one source: an IPv4 address, an IPv6 /64 or anything inside it', () => {
    expect(firewallMayWiden('ipv4', 32, { sources: 0, blocksCovered: 0 }, DEFAULTS)).toBe(true);
    expect(firewallMayWiden('ipv6', 64, { sources: 0, blocksCovered: 0 }, DEFAULTS)).toBe(true);
    expect(firewallMayWiden('ipv6', 128, { sources: 0, blocksCovered: 0 }, DEFAULTS)).toBe(true);
  });
});
