// The dashboard page as a document: its CSP allows exactly its inline style and script (by hash), the
// script parses, and nothing in it points anywhere but the admin listener.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DASHBOARD_CSP, DASHBOARD_HTML } from '../../src/admin/dashboard-page.js';
import { DASHBOARD_SCRIPT } from '../../src/admin/dashboard-script.js';

function inlineBlocks(tag: 'script' | 'style'): string[] {
  return [...DASHBOARD_HTML.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((match) => match[1]!);
}

function hashSource(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

describe('dashboard page', () => {
  it('has one inline script and one inline style, each allowed by its hash and nothing else', () => {
    const scripts = inlineBlocks('script');
    const styles = inlineBlocks('style');
    expect(scripts).toHaveLength(1);
    expect(styles).toHaveLength(1);
    const directives = new Map(DASHBOARD_CSP.split('; ').map((directive) => {
      const [name, ...values] = directive.split(' ');
      return [name, values.join(' ')];
    }));
    expect(directives.get('default-src')).toBe("'self'");
    expect(directives.get('script-src')).toBe(hashSource(scripts[0]!));
    expect(directives.get('style-src')).toBe(hashSource(styles[0]!));
    expect(DASHBOARD_CSP).not.toContain('unsafe');
  });

  it('inlines a script that parses, without inline event handlers or style attributes the CSP would block', () => {
    expect(inlineBlocks('script')[0]).toBe(DASHBOARD_SCRIPT);
    expect(() => new Function(DASHBOARD_SCRIPT)).not.toThrow();
    expect(DASHBOARD_HTML).not.toMatch(/\son[a-z]+=/i);
    expect(DASHBOARD_HTML).not.toMatch(/\sstyle=/i);
    expect(DASHBOARD_SCRIPT).not.toMatch(/innerHTML|insertAdjacentHTML|document\.write|setAttribute\('style'/);
  });

  it('loads nothing from elsewhere: no external src, href, url() or @import', () => {
    expect(DASHBOARD_HTML).not.toMatch(/(src|href)=["']?(https?:)?\/\//i);
    expect(inlineBlocks('style')[0]).not.toMatch(/url\(|@import/i);
    // The one absolute URL is the SVG namespace name, which is never fetched.
    expect([...DASHBOARD_HTML.matchAll(/https?:\/\/[^'"\s)]+/g)].map((match) => match[0])).toEqual(['http://www.w3.org/2000/svg']);
    // Only the admin listener's own JSON, by relative path.
    expect([...DASHBOARD_SCRIPT.matchAll(/getJson\((?:'([^']*)'|(\w+\(\)))/g)].map((match) => match[1] ?? match[2])).toEqual([
      'status', 'historyUrl()', 'sources?top=10', 'pushback?limit=100',
    ]);
  });
});
