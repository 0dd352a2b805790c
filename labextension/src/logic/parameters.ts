/**
 * The parameters a notebook declares in its cell tagged ``parameters``, read in the browser.
 *
 * The Schedule dialog pre-fills one input per parameter, so it reads the cell's simple
 * assignments (``name = literal``, ``name: type = literal``) the way papermill and the
 * scheduler do (hub_ext/services/scheduler/notebooks.py): a parameter's type is its
 * annotation, else the type of its default when that is a Python literal; a default that
 * is an expression (``today = date.today()``) accepts any value. Values stay typed
 * (numbers, booleans, strings, None, lists, dicts) so that what is sent is JSON of the
 * type the service checks against the notebook.
 *
 * No JupyterLab imports: unit-tested in src/__tests__/parameters.spec.ts.
 */

/** A JSON value: what the scheduler takes as a parameter. */
export type JSONValue =
  null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** The service's parameter types (``_ACCEPTS``); null accepts any value. */
export type ParameterType = 'int' | 'float' | 'str' | 'bool' | 'list' | 'tuple' | 'dict' | null;

const TYPES: ReadonlySet<string> = new Set([
  'int',
  'float',
  'str',
  'bool',
  'list',
  'tuple',
  'dict'
]);

/** A parameter of the ``parameters`` cell. */
export interface IParameter {
  name: string;
  /** The annotation as written (``float``, ``list[int]``), or null. */
  annotation: string | null;
  /** What values the service accepts for it (null: any). */
  type: ParameterType;
  /** The default's source text as written (``0.5``, ``'Berlin'``, ``date.today()``). */
  source: string;
  /** The default as a value, when it is a literal; ``undefined`` for an expression. */
  value: JSONValue | undefined;
}

// ------------------------------------------------------------------ literals

class LiteralError extends Error {}

/** Whether ``value`` is a Python float (``1.0``, ``1e3``) rather than an int, by its text. */
interface IParsed {
  value: JSONValue;
  kind: 'int' | 'float' | 'str' | 'bool' | 'none' | 'list' | 'tuple' | 'dict';
}

/**
 * A Python literal (``ast.literal_eval``'s subset that JSON can carry) as a value.
 *
 * Strings (any quotes, raw and unicode prefixes, escapes), ints (also hex, octal, binary,
 * underscores), floats, signs, True/False/None, lists, tuples and dicts with string keys.
 * Throws for anything else (names, calls, f-strings, bytes, sets, complex numbers).
 */
export function parsePythonLiteral(text: string): { value: JSONValue; kind: IParsed['kind'] } {
  const parser = new LiteralParser(text);
  const result = parser.value();
  parser.skipSpace();
  if (!parser.atEnd()) {
    throw new LiteralError(`unexpected '${text.slice(parser.pos, parser.pos + 10)}'`);
  }
  return result;
}

class LiteralParser {
  pos = 0;
  constructor(private readonly text: string) {}

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  skipSpace(): void {
    // inside brackets, newlines and comments are whitespace too
    for (;;) {
      const m = /^(?:\s+|#[^\n]*|\\\n)/.exec(this.text.slice(this.pos));
      if (!m || !m[0]) {
        return;
      }
      this.pos += m[0].length;
    }
  }

  private peek(): string {
    return this.text[this.pos] ?? '';
  }

  value(): IParsed {
    this.skipSpace();
    const rest = this.text.slice(this.pos);
    const c = this.peek();
    if (c === '[') {
      return { value: this.sequence(']'), kind: 'list' };
    }
    if (c === '(') {
      return this.tupleOrGroup();
    }
    if (c === '{') {
      return { value: this.dict(), kind: 'dict' };
    }
    const str = /^([rRuU]?)('''|"""|'|")/.exec(rest);
    if (str) {
      return { value: this.strings(), kind: 'str' };
    }
    const word = /^(True|False|None)\b/.exec(rest);
    if (word) {
      this.pos += word[0].length;
      return word[1] === 'None'
        ? { value: null, kind: 'none' }
        : { value: word[1] === 'True', kind: 'bool' };
    }
    if (/^[-+]?\s*(?:\d|\.\d)/.test(rest)) {
      return this.number();
    }
    throw new LiteralError(rest ? `not a literal: ${rest.slice(0, 20)}` : 'nothing to read');
  }

  private number(): IParsed {
    let sign = 1;
    while (this.peek() === '-' || this.peek() === '+') {
      if (this.peek() === '-') {
        sign = -sign;
      }
      this.pos++;
      this.skipSpace();
    }
    const rest = this.text.slice(this.pos);
    const radix = /^0([xXoObB])([0-9a-fA-F_]+)/.exec(rest);
    if (radix) {
      this.pos += radix[0].length;
      const base = { x: 16, o: 8, b: 2 }[radix[1].toLowerCase() as 'x' | 'o' | 'b'];
      const digits = radix[2].replace(/_/g, '');
      const n = parseInt(digits, base);
      if (Number.isNaN(n) || !new RegExp(`^[0-9a-f]+$`, 'i').test(digits)) {
        throw new LiteralError(`bad number ${radix[0]}`);
      }
      this.noSuffix();
      return { value: sign * n, kind: 'int' };
    }
    const m = /^(?:\d[\d_]*)?(?:\.[\d_]*)?(?:[eE][-+]?\d[\d_]*)?/.exec(rest);
    const raw = m ? m[0] : '';
    if (!raw || raw === '.' || /_(?:_|$|\.|[eE])|\._/.test(raw)) {
      throw new LiteralError(`bad number ${rest.slice(0, 20)}`);
    }
    this.pos += raw.length;
    this.noSuffix();
    const isFloat = /[.eE]/.test(raw);
    if (!isFloat && /^0\d/.test(raw.replace(/_/g, '')) && /[1-9]/.test(raw)) {
      throw new LiteralError(`leading zeros in ${raw} are not allowed in Python`);
    }
    const n = Number(raw.replace(/_/g, ''));
    if (!Number.isFinite(n)) {
      throw new LiteralError(`${raw} is out of range`);
    }
    return { value: sign * n === 0 ? 0 : sign * n, kind: isFloat ? 'float' : 'int' };
  }

  private noSuffix(): void {
    if (/^[\w.]/.test(this.peek())) {
      throw new LiteralError(`not a literal: ${this.text.slice(this.pos - 5, this.pos + 5)}`);
    }
  }

  /** One string literal, or several adjacent ones (implicit concatenation). */
  private strings(): string {
    let out = '';
    for (;;) {
      out += this.string();
      const save = this.pos;
      this.skipInlineSpace();
      if (!/^[rRuU]?('|")/.test(this.text.slice(this.pos))) {
        this.pos = save;
        return out;
      }
    }
  }

  private skipInlineSpace(): void {
    while (this.peek() === ' ' || this.peek() === '\t') {
      this.pos++;
    }
  }

  private string(): string {
    const m = /^([rRuU]?)('''|"""|'|")/.exec(this.text.slice(this.pos))!;
    const raw = m[1].toLowerCase() === 'r';
    const quote = m[2];
    this.pos += m[0].length;
    let out = '';
    for (;;) {
      if (this.atEnd()) {
        throw new LiteralError('unterminated string');
      }
      if (this.text.startsWith(quote, this.pos)) {
        this.pos += quote.length;
        return out;
      }
      const c = this.text[this.pos];
      if (c === '\n' && quote.length === 1) {
        throw new LiteralError('unterminated string');
      }
      if (c !== '\\') {
        out += c;
        this.pos++;
        continue;
      }
      const next = this.text[this.pos + 1] ?? '';
      if (raw) {
        out += c + next;
        this.pos += 2;
        continue;
      }
      this.pos += 2;
      switch (next) {
        case '\n':
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 'a':
          out += '\x07';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\\':
        case "'":
        case '"':
          out += next;
          break;
        case 'x':
        case 'u':
        case 'U': {
          const len = { x: 2, u: 4, U: 8 }[next];
          const hex = this.text.slice(this.pos, this.pos + len);
          if (!new RegExp(`^[0-9a-fA-F]{${len}}$`).test(hex)) {
            throw new LiteralError(`bad \\${next} escape`);
          }
          out += String.fromCodePoint(parseInt(hex, 16));
          this.pos += len;
          break;
        }
        default:
          out += '\\' + next; // Python keeps unknown escapes as written
      }
    }
  }

  private sequence(close: string): JSONValue[] {
    this.pos++; // the opening bracket
    const items: JSONValue[] = [];
    for (;;) {
      this.skipSpace();
      if (this.peek() === close) {
        this.pos++;
        return items;
      }
      items.push(this.value().value);
      this.skipSpace();
      if (this.peek() === ',') {
        this.pos++;
      } else if (this.peek() !== close) {
        throw new LiteralError(`expected ',' or '${close}'`);
      }
    }
  }

  private tupleOrGroup(): IParsed {
    const start = this.pos;
    this.pos++;
    this.skipSpace();
    if (this.peek() === ')') {
      this.pos++;
      return { value: [], kind: 'tuple' };
    }
    const first = this.value();
    this.skipSpace();
    if (this.peek() === ')') {
      this.pos++;
      return first; // (1) is 1
    }
    this.pos = start;
    return { value: this.sequence(')'), kind: 'tuple' };
  }

  private dict(): { [key: string]: JSONValue } {
    this.pos++;
    const out: { [key: string]: JSONValue } = {};
    for (;;) {
      this.skipSpace();
      if (this.peek() === '}') {
        this.pos++;
        return out;
      }
      const key = this.value();
      if (key.kind !== 'str') {
        throw new LiteralError('dict keys must be strings to be JSON');
      }
      this.skipSpace();
      if (this.peek() !== ':') {
        throw new LiteralError("expected ':' (a set is not JSON)");
      }
      this.pos++;
      out[key.value as string] = this.value().value;
      this.skipSpace();
      if (this.peek() === ',') {
        this.pos++;
      } else if (this.peek() !== '}') {
        throw new LiteralError("expected ',' or '}'");
      }
    }
  }
}

// ------------------------------------------------------------------ the cell

/**
 * One step of a scan of Python source, at ``code[i]``, where it is inside the string literal
 * that ``quote`` opened (``quote`` not '') or opens one: the index of the last character
 * the step consumes, and the quote still open after it ('' once closed). ``null`` for a
 * character outside strings that opens none.
 */
function quoteStep(code: string, i: number, quote: string): [number, string] | null {
  if (quote) {
    if (code[i] === '\\') {
      return [i + 1, quote];
    }
    return code.startsWith(quote, i) ? [i + quote.length - 1, ''] : [i, quote];
  }
  const c = code[i];
  if (c === "'" || c === '"') {
    const opened = code.startsWith(c.repeat(3), i) ? c.repeat(3) : c;
    return [i + opened.length - 1, opened];
  }
  return null;
}

/** The end of a statement's code, before a comment (quotes respected). */
function stripComment(line: string): string {
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const step = quoteStep(line, i, quote);
    if (step) {
      [i, quote] = step;
    } else if (line[i] === '#') {
      return line.slice(0, i);
    }
  }
  return line;
}

/** Whether ``code`` leaves a bracket or a triple-quoted string open. */
function isOpen(code: string): boolean {
  let depth = 0;
  let quote = '';
  for (let i = 0; i < code.length; i++) {
    const step = quoteStep(code, i, quote);
    if (step) {
      [i, quote] = step;
      continue;
    }
    const c = code[i];
    if (c === '#') {
      while (i < code.length && code[i] !== '\n') {
        i++;
      }
    } else if ('([{'.includes(c)) {
      depth++;
    } else if (')]}'.includes(c)) {
      depth--;
    }
  }
  return depth > 0 || quote.length === 3 || code.endsWith('\\');
}

/** Top-level statements of ``source`` (lines joined while a bracket or string is open). */
function statements(source: string): string[] {
  const out: string[] = [];
  let current = '';
  for (const line of source.split(/\r?\n/)) {
    current = current ? `${current}\n${line}` : line;
    if (!isOpen(current)) {
      out.push(current);
      current = '';
    }
  }
  if (current) {
    out.push(current);
  }
  return out;
}

const ASSIGNMENT = /^([\p{L}_][\p{L}\p{N}_]*)\s*(?::\s*([^=]+?)\s*)?=(?!=)\s*([\s\S]*)$/u;
const DECLARATION = /^([\p{L}_][\p{L}\p{N}_]*)\s*:\s*([^=]+?)\s*$/u;

/** The service's type for an annotation (``list[int]`` → ``list``), or null (any). */
export function annotationType(annotation: string | null): ParameterType {
  if (!annotation || annotation === 'None' || annotation === 'NoneType') {
    return null;
  }
  const base = annotation.split('[', 1)[0].trim().toLowerCase();
  return TYPES.has(base) ? (base as ParameterType) : null;
}

/**
 * The parameters the ``parameters`` cell's ``source`` declares, in order.
 *
 * Only top-level ``name = value`` and ``name: type = value`` statements count (as
 * papermill's inspector reads them); ``name: type`` without a value declares a parameter
 * without a default. Later assignments of a name replace earlier ones.
 */
export function parseParametersCell(source: string): IParameter[] {
  const found = new Map<string, IParameter>();
  for (const statement of statements(source)) {
    if (/^\s/.test(statement)) {
      continue; // indented: inside a block, not a top-level assignment
    }
    const code = stripCommentOutsideStrings(statement).trim();
    if (!code) {
      continue;
    }
    const assignment = ASSIGNMENT.exec(code);
    if (assignment) {
      const [, name, annotation, valueText] = assignment;
      const sourceText = valueText.trim();
      if (!sourceText || ASSIGNMENT.test(sourceText) || /^=/.test(sourceText)) {
        continue; // ``a = b = 1`` or a broken line
      }
      let value: JSONValue | undefined;
      let kind: IParsed['kind'] | null = null;
      try {
        ({ value, kind } = parsePythonLiteral(sourceText));
      } catch {
        value = undefined;
      }
      const type = annotation
        ? annotationType(annotation)
        : kind && kind !== 'none'
          ? (kind as ParameterType)
          : null;
      found.delete(name);
      found.set(name, { name, annotation: annotation ?? null, type, source: sourceText, value });
      continue;
    }
    const declaration = DECLARATION.exec(code);
    if (declaration) {
      const [, name, annotation] = declaration;
      found.delete(name);
      found.set(name, {
        name,
        annotation,
        type: annotationType(annotation),
        source: '',
        value: undefined
      });
    }
  }
  return [...found.values()];
}

/** ``statement`` without its comments (a multi-line statement keeps its newlines). */
function stripCommentOutsideStrings(statement: string): string {
  if (!statement.includes('\n')) {
    return stripComment(statement);
  }
  // a multi-line literal: comments inside brackets are the literal parser's to skip;
  // only the last line's trailing comment needs to go
  const lines = statement.split('\n');
  lines[lines.length - 1] = stripComment(lines[lines.length - 1]);
  return lines.join('\n');
}

// ------------------------------------------------------------------ the form

/** ``value`` written as Python would (``True``, ``None``, ``'a'``, ``[1, 2]``). */
export function pythonRepr(value: JSONValue): string {
  if (value === null) {
    return 'None';
  }
  if (typeof value === 'boolean') {
    return value ? 'True' : 'False';
  }
  if (typeof value === 'number') {
    return String(value);
  }
  if (typeof value === 'string') {
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) {
    return `[${value.map(pythonRepr).join(', ')}]`;
  }
  return `{${Object.entries(value)
    .map(([k, v]) => `${JSON.stringify(k)}: ${pythonRepr(v)}`)
    .join(', ')}}`;
}

/** The text an input shows for a parameter: strings bare, anything else as Python. */
export function parameterInputText(p: IParameter): string {
  if (p.value === undefined) {
    return p.source;
  }
  if (p.type === 'str' && typeof p.value === 'string') {
    return p.value;
  }
  return pythonRepr(p.value);
}

/** A typed value read from an input, or what is wrong with the text. */
export type InputValue = { ok: true; value: JSONValue } | { ok: false; error: string };

/**
 * The value of the text ``text`` typed for parameter ``p``, of the type it declares.
 *
 * A ``str`` parameter takes the text as it is; ``int``, ``float`` and ``bool`` take
 * Python or JSON literals of their type; a parameter of any type takes a literal when the
 * text is one, else the text as a string.
 */
export function readParameterInput(p: IParameter, text: string): InputValue {
  const trimmed = text.trim();
  if (p.type === 'str') {
    return { ok: true, value: text };
  }
  let parsed: { value: JSONValue; kind: IParsed['kind'] } | null = null;
  try {
    parsed = parsePythonLiteral(
      trimmed
        .replace(/^true$/, 'True')
        .replace(/^false$/, 'False')
        .replace(/^null$/, 'None')
    );
  } catch {
    parsed = null;
  }
  const what = `${p.name} (${p.annotation ?? p.type})`;
  switch (p.type) {
    case 'int':
      if (parsed?.kind === 'int') {
        return { ok: true, value: parsed.value };
      }
      if (parsed?.kind === 'float' && Number.isInteger(parsed.value)) {
        return { ok: true, value: parsed.value };
      }
      return { ok: false, error: `${what} must be a whole number, e.g. 3 or -1` };
    case 'float':
      if (parsed?.kind === 'int' || parsed?.kind === 'float') {
        return { ok: true, value: parsed.value };
      }
      return { ok: false, error: `${what} must be a number, e.g. 0.5 or -1e-3` };
    case 'bool':
      if (parsed?.kind === 'bool') {
        return { ok: true, value: parsed.value };
      }
      return { ok: false, error: `${what} must be True or False` };
    case 'list':
    case 'tuple':
      if (parsed?.kind === 'list' || parsed?.kind === 'tuple') {
        return { ok: true, value: parsed.value };
      }
      return { ok: false, error: `${what} must be a list, e.g. [1, 2, 3]` };
    case 'dict':
      if (parsed?.kind === 'dict') {
        return { ok: true, value: parsed.value };
      }
      return { ok: false, error: `${what} must be a dict with string keys, e.g. {"a": 1}` };
    default:
      return { ok: true, value: parsed ? parsed.value : text };
  }
}

function sameValue(a: JSONValue | undefined, b: JSONValue | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The parameters to send: the typed values of the inputs that differ from the notebook's
 * defaults. Unchanged ones are left out, so the job keeps following the notebook's own
 * defaults (an expression default such as ``date.today()`` stays an expression).
 *
 * @returns the parameters, or the first error per parameter.
 */
export function changedParameters(
  declared: IParameter[],
  inputs: Readonly<Record<string, string>>
): { parameters: Record<string, JSONValue>; errors: string[] } {
  const parameters: Record<string, JSONValue> = {};
  const errors: string[] = [];
  for (const p of declared) {
    const text = inputs[p.name];
    if (text === undefined || text === parameterInputText(p)) {
      continue;
    }
    const read = readParameterInput(p, text);
    if (!read.ok) {
      errors.push(read.error);
    } else if (p.value === undefined || !sameValue(read.value, p.value)) {
      parameters[p.name] = read.value;
    }
  }
  return { parameters, errors };
}
