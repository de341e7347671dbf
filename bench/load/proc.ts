/**
 * Readings from /proc (Linux): CPU seconds and memory of the server the load tool started, of the
 * load tool itself, of the NATS nodes of the cluster preset, and of the whole machine.
 *
 * @module
 */

/**
 * Reads a /proc file. Deno asks for --allow-all to read /proc directly, which `deno task bench`
 * does not grant, so without it the file is read through `cat` (--allow-run).
 */
async function readProc(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    try {
      const out = await new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" })
        .output();
      return out.success ? new TextDecoder().decode(out.stdout) : null;
    } catch {
      return null;
    }
  }
}

/**
 * CPU seconds (user, system) of a process from /proc/PID/stat, at 100 clock ticks a second; null
 * when it cannot be read (no /proc, or the process is gone).
 *
 * @example
 * ```ts
 * const cpu = await readCpu(Deno.pid);
 * if (cpu !== null) console.log(`${(cpu.user + cpu.sys).toFixed(2)} CPU s`);
 * ```
 */
export async function readCpu(pid: number): Promise<{ user: number; sys: number } | null> {
  const text = await readProc(`/proc/${pid}/stat`);
  if (text === null) return null;
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // After "pid (comm) ", field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
  return { user: Number(fields[11]) / 100, sys: Number(fields[12]) / 100 };
}

/**
 * A `kB` line of /proc/PID/status (VmRSS, VmHWM) in bytes; null when it cannot be read.
 *
 * @example
 * ```ts
 * const peak = await readStatusBytes(Deno.pid, "VmHWM");
 * ```
 */
export async function readStatusBytes(pid: number, key: string): Promise<number | null> {
  const text = await readProc(`/proc/${pid}/status`);
  if (text === null) return null;
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
  return m === null ? null : Number(m[1]) * 1024;
}

/**
 * The whole machine's CPU time so far from /proc/stat, in seconds summed over its cores: `busy`
 * (user, nice, system, irq, softirq, steal) and `total` (busy, idle and iowait); with `cores`,
 * what shows whether other work shared the machine during a run. Null when it cannot be read.
 *
 * @example
 * ```ts
 * const a = await readMachineCpu();
 * await new Promise((r) => setTimeout(r, 1000));
 * const b = await readMachineCpu();
 * if (a !== null && b !== null) console.log(`${((b.busy - a.busy) * 100).toFixed(0)}% busy`);
 * ```
 */
export async function readMachineCpu(): Promise<{ busy: number; total: number } | null> {
  const text = await readProc("/proc/stat");
  const m = text === null ? null : /^cpu +(.*)$/m.exec(text);
  if (m === null) return null;
  const [user, nice, system, idle, iowait, irq, softirq, steal] = m[1]!.split(/ +/).map(Number);
  const busy = user! + nice! + system! + irq! + softirq! + (steal ?? 0);
  return { busy: busy / 100, total: (busy + idle! + iowait!) / 100 };
}
