/**
 * RFC 8785 JSON Canonicalization Scheme (JCS).
 *
 * The same value always yields the same bytes, so hashes over it (audit chain,
 * approval argument digests) are stable across processes and machines.
 * Primitives are serialized as ECMAScript's JSON.stringify does, which is what
 * RFC 8785 §3.2.2 specifies; object members are sorted by UTF-16 code units
 * (§3.2.3), which is JavaScript's default string order.
 *
 * @throws TypeError for values I-JSON cannot carry: non-finite numbers, bigint,
 *   functions, symbols, and `undefined` inside arrays. `undefined` object
 *   members are omitted, as JSON.stringify omits them.
 */
export function canonicalize(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON cannot hold a non-finite number');
      return JSON.stringify(value);
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined) throw new TypeError('canonical JSON cannot hold undefined in an array');
          out += (i === 0 ? '' : ',') + canonicalize(item);
        }
        return out + ']';
      }
      if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
        return canonicalize((value as { toJSON: () => unknown }).toJSON());
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort();
      let out = '{';
      let first = true;
      for (const key of keys) {
        const member = record[key];
        if (member === undefined) continue;
        out += (first ? '' : ',') + JSON.stringify(key) + ':' + canonicalize(member);
        first = false;
      }
      return out + '}';
    }
    default:
      throw new TypeError(`canonical JSON cannot hold a ${typeof value}`);
  }
}
