/**
 * Readings from /proc (Linux): CPU seconds and memory of the server the load tool started, and of
 * the load tool itself.
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
