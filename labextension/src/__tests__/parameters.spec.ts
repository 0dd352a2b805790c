/**
 * The parameters cell is read as papermill and the scheduler read it, values typed.
 */
import { describe, expect, it } from 'vitest';

import {
  annotationType,
  changedParameters,
  parameterInputText,
  parseParametersCell,
  parsePythonLiteral,
  pythonRepr,
  readParameterInput
} from '../logic/parameters';

describe('parsePythonLiteral', () => {
  it('reads numbers, including negative, exponent, underscore and hex forms', () => {
    expect(parsePythonLiteral('3')).toEqual({ value: 3, kind: 'int' });
    expect(parsePythonLiteral('-3')).toEqual({ value: -3, kind: 'int' });
    expect(parsePythonLiteral('- 3')).toEqual({ value: -3, kind: 'int' });
    expect(parsePythonLiteral('+0.5')).toEqual({ value: 0.5, kind: 'float' });
    expect(parsePythonLiteral('-1e-3')).toEqual({ value: -0.001, kind: 'float' });
    expect(parsePythonLiteral('1_000_000')).toEqual({ value: 1000000, kind: 'int' });
    expect(parsePythonLiteral('0x1F')).toEqual({ value: 31, kind: 'int' });
    expect(parsePythonLiteral('.5')).toEqual({ value: 0.5, kind: 'float' });
    expect(parsePythonLiteral('1.')).toEqual({ value: 1, kind: 'float' });
    expect(parsePythonLiteral('-0')).toEqual({ value: 0, kind: 'int' });
  });

  it('reads strings with either quotes, escapes, prefixes and concatenation', () => {
    expect(parsePythonLiteral("'Berlin'").value).toBe('Berlin');
    expect(parsePythonLiteral('"it\'s"').value).toBe("it's");
    expect(parsePythonLiteral("'say \\'hi\\''").value).toBe("say 'hi'");
    expect(parsePythonLiteral('"a\\"b"').value).toBe('a"b');
    expect(parsePythonLiteral("'tab\\there\\n'").value).toBe('tab\there\n');
    expect(parsePythonLiteral("r'C:\\data\\new'").value).toBe('C:\\data\\new');
    expect(parsePythonLiteral("u'\\u00e9t\\xe9'").value).toBe('été');
    expect(parsePythonLiteral("'a' 'b'").value).toBe('ab');
    expect(parsePythonLiteral('"""multi\nline"""').value).toBe('multi\nline');
    expect(parsePythonLiteral("'# not a comment'").value).toBe('# not a comment');
  });

  it('reads True, False, None, lists, tuples and dicts', () => {
    expect(parsePythonLiteral('True')).toEqual({ value: true, kind: 'bool' });
    expect(parsePythonLiteral('False')).toEqual({ value: false, kind: 'bool' });
    expect(parsePythonLiteral('None')).toEqual({ value: null, kind: 'none' });
    expect(parsePythonLiteral("[1, 'a', None, [True]]")).toEqual({
      value: [1, 'a', null, [true]],
      kind: 'list'
    });
    expect(parsePythonLiteral('(1, 2,)')).toEqual({ value: [1, 2], kind: 'tuple' });
    expect(parsePythonLiteral('(1,)')).toEqual({ value: [1], kind: 'tuple' });
    expect(parsePythonLiteral('(5)')).toEqual({ value: 5, kind: 'int' });
    expect(parsePythonLiteral('{\'a\': 1, "b": [2]}')).toEqual({
      value: { a: 1, b: [2] },
      kind: 'dict'
    });
  });

  it('refuses what is not a JSON-able literal', () => {
    for (const bad of [
      'date.today()',
      'x',
      "f'{x}'",
      "b'raw'",
      '{1, 2}',
      '{1: 2}',
      '1 + 2',
      '3j',
      '007',
      "'unterminated",
      'Truex',
      '[1, 2'
    ]) {
      expect(() => parsePythonLiteral(bad), bad).toThrow();
    }
  });
});

describe('parseParametersCell', () => {
  const cell = [
    '# Parameters of the report',
    'city = "Berlin"  # where',
    'quote = \'say "hi"\'',
    'n_rows: int = 1_000',
    'alpha: float = 1',
    'threshold = -0.25',
    'verbose = False',
    'limit = None',
    'start_date = date.today()',
    'columns = [',
    '    "a",  # the first',
    '    "b",',
    ']',
    'options: dict = {"x": 1}',
    'ratio: "float" = 0.5',
    'tags: list[str] = []',
    'model_name: str',
    'if True:',
    '    hidden = 1',
    'a = b = 3',
    'x == 3',
    'count += 1',
    'n_rows = 500'
  ].join('\n');
  const params = parseParametersCell(cell);
  const byName = Object.fromEntries(params.map(p => [p.name, p]));

  it('finds the top-level assignments, the last one winning', () => {
    expect(params.map(p => p.name)).toEqual([
      'city',
      'quote',
      'alpha',
      'threshold',
      'verbose',
      'limit',
      'start_date',
      'columns',
      'options',
      'ratio',
      'tags',
      'model_name',
      'n_rows'
    ]);
    expect(byName.n_rows.value).toBe(500);
  });

  it('keeps values typed', () => {
    expect(byName.city).toMatchObject({ type: 'str', value: 'Berlin', source: '"Berlin"' });
    expect(byName.quote).toMatchObject({ type: 'str', value: 'say "hi"' });
    expect(byName.threshold).toMatchObject({ type: 'float', value: -0.25 });
    expect(byName.verbose).toMatchObject({ type: 'bool', value: false });
    expect(byName.limit).toMatchObject({ type: null, value: null });
    expect(byName.columns).toMatchObject({ type: 'list', value: ['a', 'b'] });
    expect(byName.options).toMatchObject({ type: 'dict', value: { x: 1 } });
  });

  it('takes the type from an annotation first, like the service', () => {
    expect(byName.alpha).toMatchObject({ annotation: 'float', type: 'float', value: 1 });
    expect(byName.tags).toMatchObject({ annotation: 'list[str]', type: 'list', value: [] });
    expect(byName.model_name).toMatchObject({ annotation: 'str', type: 'str', value: undefined });
    expect(byName.ratio.type).toBeNull(); // a string annotation is not one of the known types
  });

  it('keeps expression defaults as their source, of any type', () => {
    expect(byName.start_date).toMatchObject({
      type: null,
      value: undefined,
      source: 'date.today()'
    });
  });

  it('reads an empty cell or one of comments as no parameters', () => {
    expect(parseParametersCell('')).toEqual([]);
    expect(parseParametersCell('# nothing here\n\n')).toEqual([]);
  });

  it('handles Windows line ends and a comment with a quote', () => {
    const [p] = parseParametersCell("path = 'data/in.csv'  # don't change\r\n");
    expect(p).toMatchObject({ name: 'path', value: 'data/in.csv' });
  });
});

describe('annotationType', () => {
  it('maps annotations to the service types', () => {
    expect(annotationType('int')).toBe('int');
    expect(annotationType('Dict[str, int]')).toBe('dict');
    expect(annotationType('Tuple[int, ...]')).toBe('tuple');
    expect(annotationType('None')).toBeNull();
    expect(annotationType('Optional[int]')).toBeNull();
    expect(annotationType(null)).toBeNull();
  });
});

describe('the form', () => {
  const params = parseParametersCell(
    [
      'city = "Berlin"',
      'n: int = 3',
      'alpha = 0.5',
      'flag = True',
      'limit = None',
      'when = date.today()',
      'items = [1, 2]'
    ].join('\n')
  );
  const p = Object.fromEntries(params.map(x => [x.name, x]));

  it('shows strings bare and other values as Python', () => {
    expect(parameterInputText(p.city)).toBe('Berlin');
    expect(parameterInputText(p.n)).toBe('3');
    expect(parameterInputText(p.flag)).toBe('True');
    expect(parameterInputText(p.limit)).toBe('None');
    expect(parameterInputText(p.when)).toBe('date.today()');
    expect(parameterInputText(p.items)).toBe('[1, 2]');
    expect(pythonRepr({ a: [true, null, 'x'] })).toBe('{"a": [True, None, "x"]}');
  });

  it('reads inputs as the declared type, or says what is expected', () => {
    expect(readParameterInput(p.city, '42')).toEqual({ ok: true, value: '42' });
    expect(readParameterInput(p.n, '-7')).toEqual({ ok: true, value: -7 });
    expect(readParameterInput(p.n, '1.5')).toMatchObject({ ok: false });
    expect(readParameterInput(p.n, 'three')).toMatchObject({
      ok: false,
      error: expect.stringContaining('whole number')
    });
    expect(readParameterInput(p.alpha, '2')).toEqual({ ok: true, value: 2 });
    expect(readParameterInput(p.flag, 'false')).toEqual({ ok: true, value: false });
    expect(readParameterInput(p.flag, 'yes')).toMatchObject({ ok: false });
    expect(readParameterInput(p.limit, '5')).toEqual({ ok: true, value: 5 });
    expect(readParameterInput(p.limit, 'None')).toEqual({ ok: true, value: null });
    expect(readParameterInput(p.limit, 'some text')).toEqual({ ok: true, value: 'some text' });
    expect(readParameterInput(p.items, "['a']")).toEqual({ ok: true, value: ['a'] });
    expect(readParameterInput(p.items, '3')).toMatchObject({ ok: false });
  });

  it('sends only the values that differ from the notebook', () => {
    const inputs = Object.fromEntries(params.map(x => [x.name, parameterInputText(x)]));
    expect(changedParameters(params, inputs)).toEqual({ parameters: {}, errors: [] });
    const changed = changedParameters(params, {
      ...inputs,
      city: 'Paris',
      n: '3.0', // the same value written differently is no change
      alpha: '0.75',
      limit: '10',
      when: "'2025-01-01'"
    });
    expect(changed).toEqual({
      parameters: { city: 'Paris', alpha: 0.75, limit: 10, when: '2025-01-01' },
      errors: []
    });
  });

  it('collects every bad value', () => {
    const inputs = Object.fromEntries(params.map(x => [x.name, parameterInputText(x)]));
    const { errors } = changedParameters(params, { ...inputs, n: 'x', flag: 'maybe' });
    expect(errors).toHaveLength(2);
  });
});
