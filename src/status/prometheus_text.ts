/**
 * A reader of the Prometheus text exposition format (version 0.0.4), the format of msgserver's
 * `/metrics`: enough of it for `msgserver status` to read any exporter's scrape, with errors that
 * name the line. It keeps samples as they come and looks them up by name and labels; histograms
 * are read back from their `_bucket` samples.
 *
 * @module
 */

/** One sample line: `name{labels} value`. */
export interface Sample {
  name: string;
  labels: Readonly<Record<string, string>>;
  value: number;
}

/** A histogram read back from a scrape: cumulative buckets, rising, the last one `+Inf`. */
export interface Histogram {
  buckets: { le: number; count: number }[];
  sum: number;
  count: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/**
 * One scrape, parsed. Look-ups ignore samples whose labels do not include the ones asked for.
 *
 * @example
 * ```ts
 * import { Scrape } from "./prometheus_text.ts";
 * const scrape = Scrape.parse('# TYPE n_total counter\nn_total{code="4"} 2\n');
 * scrape.value("n_total", { code: "4" }); // 2
 * scrape.type("n_total"); // "counter"
 * ```
 */
export class Scrape {
  /** Every sample, in the order of the text. */
  readonly samples: readonly Sample[];
  readonly #types: ReadonlyMap<string, string>;
  readonly #byName = new Map<string, Sample[]>();

  private constructor(samples: Sample[], types: Map<string, string>) {
    this.samples = samples;
    this.#types = types;
    for (const s of samples) {
      const list = this.#byName.get(s.name);
      if (list === undefined) this.#byName.set(s.name, [s]);
      else list.push(s);
    }
  }

  /**
   * Parses the text of a scrape; throws a `SyntaxError` naming the line that is not the format.
   *
   * @example
   * ```ts
   * import { Scrape } from "./prometheus_text.ts";
   * Scrape.parse("up 1\n").value("up"); // 1
   * ```
   */
  static parse(text: string): Scrape {
    const samples: Sample[] = [];
    const types = new Map<string, string>();
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.replace(/\r$/, "");
      if (line.trim() === "") continue;
      try {
        if (line.startsWith("#")) {
          const type = /^#\s+TYPE\s+(\S+)\s+(\S+)\s*$/.exec(line);
          if (type !== null) types.set(type[1]!, type[2]!);
          continue; // HELP and other comments: nothing the status needs
        }
        samples.push(parseSample(line));
      } catch (e) {
        throw new SyntaxError(`Cannot parse metrics line ${i + 1}: ${(e as Error).message}`);
      }
    }
    return new Scrape(samples, types);
  }

  /** The `# TYPE` of a metric family, if the text gave one. */
  type(family: string): string | undefined {
    return this.#types.get(family);
  }

  /** Whether any sample has this name. */
  has(name: string): boolean {
    return this.#byName.has(name);
  }

  /** The samples of `name` whose labels include `labels`. */
  find(name: string, labels: Readonly<Record<string, string>> = {}): Sample[] {
    const wanted = Object.entries(labels);
    return (this.#byName.get(name) ?? []).filter((s) =>
      wanted.every(([k, v]) => s.labels[k] === v)
    );
  }

  /**
   * The value of `name` (summed over the samples that match `labels`, as a counter split by a
   * label adds up), or undefined when there is none.
   */
  value(name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
    const found = this.find(name, labels);
    return found.length === 0 ? undefined : found.reduce((sum, s) => sum + s.value, 0);
  }

  /** The histogram `family` (its `_bucket`, `_sum` and `_count`), or undefined without buckets. */
  histogram(family: string, labels: Readonly<Record<string, string>> = {}): Histogram | undefined {
    const buckets = this.find(`${family}_bucket`, labels)
      .map((s) => ({ le: boundOf(s.labels.le), count: s.value }))
      .filter((b) => !Number.isNaN(b.le))
      .sort((a, b) => a.le - b.le);
    if (buckets.length === 0) return undefined;
    return {
      buckets,
      sum: this.value(`${family}_sum`, labels) ?? NaN,
      count: this.value(`${family}_count`, labels) ?? buckets.at(-1)!.count,
    };
  }
}

/** A sample value: a float, or NaN, +Inf, -Inf in any case (as Go's ParseFloat takes them). */
function parseValue(text: string): number {
  const lower = text.toLowerCase();
  if (lower === "nan") return NaN;
  if (lower === "+inf" || lower === "inf") return Infinity;
  if (lower === "-inf") return -Infinity;
  const n = Number(text);
  if (text === "" || Number.isNaN(n) || !/^[-+]?(\d|\.\d)/.test(text)) {
    throw new Error(`"${text}" is not a number`);
  }
  return n;
}

/** A bucket's `le`, NaN when it has none or it is not a number. */
function boundOf(le: string | undefined): number {
  try {
    return le === undefined ? NaN : parseValue(le);
  } catch {
    return NaN;
  }
}

function parseSample(line: string): Sample {
  let rest = line.trimStart();
  const name = NAME.exec(rest)?.[0];
  if (name === undefined) throw new Error(`expected a metric name, got "${line}"`);
  rest = rest.slice(name.length);
  const labels: Record<string, string> = {};
  const labelled = rest.trimStart().startsWith("{");
  if (labelled) {
    rest = rest.trimStart().slice(1).trimStart();
    while (!rest.startsWith("}")) {
      const label = LABEL_NAME.exec(rest)?.[0];
      if (label === undefined) throw new Error(`expected a label name in "${line}"`);
      rest = rest.slice(label.length).trimStart();
      if (!rest.startsWith("=")) throw new Error(`expected = after label "${label}"`);
      rest = rest.slice(1).trimStart();
      if (!rest.startsWith('"')) throw new Error(`expected a quoted value of "${label}"`);
      let value = "";
      let i = 1;
      for (; i < rest.length && rest[i] !== '"'; i++) {
        if (rest[i] !== "\\") {
          value += rest[i];
          continue;
        }
        const next = rest[++i];
        if (next === "n") value += "\n";
        else if (next === "\\" || next === '"') value += next;
        else throw new Error(`bad escape "\\${next ?? ""}" in the value of "${label}"`);
      }
      if (i >= rest.length) throw new Error(`unterminated value of label "${label}"`);
      if (label in labels) throw new Error(`label "${label}" given twice`);
      labels[label] = value;
      rest = rest.slice(i + 1).trimStart();
      if (rest.startsWith(",")) rest = rest.slice(1).trimStart();
      else if (!rest.startsWith("}")) throw new Error(`expected , or } after label "${label}"`);
    }
    rest = rest.slice(1);
  }
  if (!labelled && !/^[ \t]/.test(rest)) {
    throw new Error(`expected a space and a value after "${name}"`);
  }
  const fields = rest.trim().split(/[ \t]+/);
  if (fields.length > 2) throw new Error(`unexpected "${fields.slice(2).join(" ")}" at the end`);
  if (fields.length === 2 && !/^-?\d+$/.test(fields[1]!)) {
    throw new Error(`timestamp "${fields[1]}" is not an integer`);
  }
  return { name, labels, value: parseValue(fields[0]!) };
}
