/**
 * Duplicate member names in JSON objects. `JSON.parse` keeps the last of two
 * equal names silently, so two parsers can read one token differently (RFC
 * 8725 §2.8, RFC 7515 §5.2: duplicate header names must be refused). This
 * scanner walks valid JSON once and reports the first name seen twice in the
 * same object, comparing names after unescaping (`"a"` and `"\u0061"` are equal).
 */

/** The first duplicated member name in `text`, or undefined. `text` should be valid JSON; invalid input is reported as undefined and left to JSON.parse to refuse. */
export function findDuplicateKey(text: string): string | undefined {
  // One set of names per open object; arrays push null so nesting stays aligned.
  const stack: (Set<string> | null)[] = [];
  let expectingKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x7b /* { */) {
      stack.push(new Set());
      expectingKey = true;
    } else if (ch === 0x5b /* [ */) {
      stack.push(null);
      expectingKey = false;
    } else if (ch === 0x7d /* } */ || ch === 0x5d /* ] */) {
      stack.pop();
      expectingKey = false;
    } else if (ch === 0x2c /* , */) {
      expectingKey = stack[stack.length - 1] instanceof Set;
    } else if (ch === 0x22 /* " */) {
      const end = endOfString(text, i);
      if (end < 0) return undefined;
      if (expectingKey) {
        const names = stack[stack.length - 1];
        let name: string;
        const raw = text.slice(i + 1, end);
        if (!raw.includes('\\')) name = raw;
        else {
          try {
            name = JSON.parse(text.slice(i, end + 1)) as string;
          } catch {
            return undefined;
          }
        }
        if (names instanceof Set) {
          if (names.has(name)) return name;
          names.add(name);
        }
        expectingKey = false;
      }
      i = end;
    }
  }
  return undefined;
}

/** Index of the quote closing the string that opens at `start`, or -1. */
function endOfString(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch === 0x5c /* \ */) i++;
    else if (ch === 0x22) return i;
  }
  return -1;
}
