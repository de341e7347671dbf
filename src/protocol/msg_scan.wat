;; The MSG run scanner behind FrameDecoder.nextMsgRun (msg_scan.ts): one call walks the frames of a
;; read, staged in this module's memory, and takes every MSG frame that a greeted connection
;; accepts as it is, up to the first frame that is anything else.
;;
;; Why WebAssembly: after the line formatter (line.wat), the per-frame loop in JavaScript (the
;; decoder's next, the connection's checks, the name rule) was the largest part of the server's
;; busy time (see docs/benchmarks.md). Here a frame costs a few loads and compares, and a name is
;; checked 16 bytes at a time with SIMD.
;;
;; What it takes, all of it from docs/protocol.md: type 0x02; a length from 6 + name_len up to
;; $maxLength (the decoder's maxMsgLength, or less), the whole frame within [$p, $end); a msg_id
;; above $lastId (so never 0), ids strictly increasing along the run; a name of 1..255 bytes each
;; in 0x21..0x7e (printable ASCII, which the name rule accepts; any other byte, even in valid
;; UTF-8, stops the run so that the full rule in name.ts decides); a payload of at most
;; $maxPayload bytes. It stops at the first frame that is not all of that, or not whole, without
;; judging it: the caller decodes and checks that one frame as before.
;;
;; Results, at RESULT_AT: u32 the offset just past the last frame taken, u32 the last msg_id
;; taken, u32 why it stopped (0: out of bytes, a frame not whole before $end; 1: a frame it does
;; not take). The return value is the number of frames taken.
;;
;; Build: `deno task build:wasm` assembles this file into msg_scan_wasm.ts, and a test checks that
;; msg_scan_wasm.ts is exactly what this file assembles to.
;;
;; Contract with msg_scan.ts (which keeps it): the name's 16-byte loads may read up to 15 bytes
;; past $end, so 16 spare bytes follow the staged bytes; $maxLength is below 2^31 (it is at most
;; the staged window), which keeps the sums below in range.
(module
  (memory (export "memory") 3)

  ;; A u32 stored big-endian at $p.
  (func $be32 (param $p i32) (result i32)
    (local $x i32)
    (local.set $x (i32.load (local.get $p)))
    (i32.rotl
      (i32.or
        (i32.shr_u (i32.and (local.get $x) (i32.const 0xff00ff00)) (i32.const 8))
        (i32.shl (i32.and (local.get $x) (i32.const 0x00ff00ff)) (i32.const 8)))
      (i32.const 16)))

  ;; True if every byte of [$q, $q + $n), $n >= 1, is printable ASCII (0x21..0x7e).
  (func $printable (param $q i32) (param $n i32) (result i32)
    (local $mask i32)
    (loop $chunk
      ;; A bit per byte outside 0x21..0x7e: (c - 0x21) mod 256 > 0x5d.
      (local.set $mask
        (i8x16.bitmask
          (i8x16.gt_u
            (i8x16.sub
              (v128.load (local.get $q))
              (v128.const i8x16 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21 0x21))
            (v128.const i8x16 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d 0x5d))))
      ;; Of the last block, only the name's bytes count.
      (if (i32.lt_u (local.get $n) (i32.const 16))
        (then
          (local.set $mask
            (i32.and
              (local.get $mask)
              (i32.sub (i32.shl (i32.const 1) (local.get $n)) (i32.const 1))))))
      (if (local.get $mask) (then (return (i32.const 0))))
      (local.set $q (i32.add (local.get $q) (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 16)))
      (br_if $chunk (i32.gt_s (local.get $n) (i32.const 0))))
    (i32.const 1))

  ;; Takes the MSG frames of [$p, $end) as described above; results at $out.
  (func (export "scan")
    (param $out i32) (param $p i32) (param $end i32) (param $lastId i32)
    (param $maxLength i32) (param $maxPayload i32)
    (result i32)
    (local $count i32)
    (local $length i32)
    (local $id i32)
    (local $nameLength i32)
    (local $stop i32)
    (block $done
      (loop $frame
        ;; The header: out of bytes without it.
        (local.set $stop (i32.const 0))
        (br_if $done (i32.lt_u (i32.sub (local.get $end) (local.get $p)) (i32.const 5)))
        (local.set $stop (i32.const 1))
        (br_if $done (i32.ne (i32.load8_u offset=4 (local.get $p)) (i32.const 0x02)))
        (local.set $length (call $be32 (local.get $p)))
        ;; 6 = type, msg_id, name_len: shorter is the caller's protocol error.
        (br_if $done (i32.lt_u (local.get $length) (i32.const 6)))
        (br_if $done (i32.gt_u (local.get $length) (local.get $maxLength)))
        ;; Not whole yet: out of bytes.
        (local.set $stop (i32.const 0))
        (br_if $done
          (i32.lt_u
            (i32.sub (i32.sub (local.get $end) (local.get $p)) (i32.const 4))
            (local.get $length)))
        (local.set $stop (i32.const 1))
        (local.set $id (call $be32 (i32.add (local.get $p) (i32.const 5))))
        ;; Also stops at msg_id 0, which no $lastId is below.
        (br_if $done (i32.le_u (local.get $id) (local.get $lastId)))
        (local.set $nameLength (i32.load8_u offset=9 (local.get $p)))
        (br_if $done (i32.eqz (local.get $nameLength)))
        ;; The body after the name: length - 1 (type) - 5 (msg_id, name_len) - name_len.
        (br_if $done
          (i32.lt_s
            (i32.sub (i32.sub (local.get $length) (i32.const 6)) (local.get $nameLength))
            (i32.const 0)))
        (br_if $done
          (i32.gt_u
            (i32.sub (i32.sub (local.get $length) (i32.const 6)) (local.get $nameLength))
            (local.get $maxPayload)))
        (br_if $done
          (i32.eqz
            (call $printable (i32.add (local.get $p) (i32.const 10)) (local.get $nameLength))))
        (local.set $lastId (local.get $id))
        (local.set $p (i32.add (i32.add (local.get $p) (i32.const 4)) (local.get $length)))
        (local.set $count (i32.add (local.get $count) (i32.const 1)))
        (br $frame)))
    (i32.store (local.get $out) (local.get $p))
    (i32.store offset=4 (local.get $out) (local.get $lastId))
    (i32.store offset=8 (local.get $out) (local.get $stop))
    (local.get $count))
)
