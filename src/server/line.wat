;; The line formatter behind LineBuffer (line.ts): one call formats one record,
;; `<client_id> <msg_id> <name> <payload>\n`, from bytes staged in this module's memory into the
;; batch that is built in the same memory.
;;
;; Why WebAssembly: on the server's one JS thread, formatting was half of the time spent per
;; message. JS touches the payload a byte (or, with DataView, four bytes) at a time; here SIMD
;; checks and copies 16 bytes at a time, also around the bytes it escapes (see
;; docs/benchmarks.md for the figures).
;;
;; Build: `deno task build:wasm` assembles this file into line_wasm.ts, and a test checks that
;; line_wasm.ts is exactly what this file assembles to.
;;
;; Contract with line.ts (which keeps it): the 16-byte copies may read up to 16 bytes past the
;; name's end (for an empty name) and write up to 15 bytes past the line's end, so 32 spare bytes
;; follow both the staged source and the reserved output.
(module
  (memory (export "memory") 1)

  ;; Digits in u32 $n, without a loop: one compare per power of ten.
  (func $digits (param $n i32) (result i32)
    (i32.add
      (i32.const 1)
      (i32.add
        (i32.add
          (i32.add
            (i32.ge_u (local.get $n) (i32.const 10))
            (i32.ge_u (local.get $n) (i32.const 100)))
          (i32.add
            (i32.ge_u (local.get $n) (i32.const 1000))
            (i32.ge_u (local.get $n) (i32.const 10000))))
        (i32.add
          (i32.add
            (i32.ge_u (local.get $n) (i32.const 100000))
            (i32.ge_u (local.get $n) (i32.const 1000000)))
          (i32.add
            (i32.add
              (i32.ge_u (local.get $n) (i32.const 10000000))
              (i32.ge_u (local.get $n) (i32.const 100000000)))
            (i32.ge_u (local.get $n) (i32.const 1000000000)))))))

  ;; Writes u32 $n in decimal at $p; returns the offset past its last digit.
  (func $decimal (param $p i32) (param $n i32) (result i32)
    (local $end i32)
    (local $q i32)
    (local.set $end (i32.add (local.get $p) (call $digits (local.get $n))))
    (local.set $p (local.get $end))
    (loop $digit
      ;; n / 10 for any u32, as a multiply and a shift instead of a division.
      (local.set $q
        (i32.wrap_i64
          (i64.shr_u
            (i64.mul (i64.extend_i32_u (local.get $n)) (i64.const 0xcccccccd))
            (i64.const 35))))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8
        (local.get $p)
        (i32.add
          (i32.const 0x30)
          (i32.sub (local.get $n) (i32.mul (local.get $q) (i32.const 10)))))
      (local.set $n (local.get $q))
      (br_if $digit (local.get $n)))
    (local.get $end))

  ;; A bit per byte of $v, set where the byte must be escaped: LF, CR or backslash.
  (func $escapeMask (param $v v128) (result i32)
    (i8x16.bitmask
      (v128.or
        (v128.or
          (i8x16.eq (local.get $v) (v128.const i8x16 10 10 10 10 10 10 10 10 10 10 10 10 10 10 10 10))
          (i8x16.eq (local.get $v) (v128.const i8x16 13 13 13 13 13 13 13 13 13 13 13 13 13 13 13 13)))
        (i8x16.eq (local.get $v) (v128.const i8x16 92 92 92 92 92 92 92 92 92 92 92 92 92 92 92 92)))))

  ;; The two bytes that stand for $c, one of LF, CR and backslash, as a little-endian u16:
  ;; `\n`, `\r` or `\\`.
  (func $escape (param $c i32) (result i32)
    (select
      (i32.const 0x6e5c)
      (select (i32.const 0x725c) (i32.const 0x5c5c) (i32.eq (local.get $c) (i32.const 0x0d)))
      (i32.eq (local.get $c) (i32.const 0x0a))))

  ;; Writes one line at $p: the ids, the name at [$nameStart, $nameEnd) and the payload at
  ;; [$nameEnd, $payloadEnd), escaped. Returns the offset past the line feed.
  (func $line (export "line")
    (param $p i32) (param $clientId i32) (param $msgId i32)
    (param $nameStart i32) (param $nameEnd i32) (param $payloadEnd i32)
    (result i32)
    (local $i i32)
    (local $end i32)
    (local $c i32)
    (local $mask i32)
    (local $k i32)
    (local $v v128)
    (local.set $p (call $decimal (local.get $p) (local.get $clientId)))
    (i32.store8 (local.get $p) (i32.const 0x20))
    (local.set $p (call $decimal (i32.add (local.get $p) (i32.const 1)) (local.get $msgId)))
    (i32.store8 (local.get $p) (i32.const 0x20))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))

    ;; The name (already checked to need no escape), 16 bytes at a time: what is copied past its
    ;; end is overwritten by the space and the payload, or lies in the spare bytes.
    (local.set $i (local.get $nameStart))
    (local.set $end (i32.add (local.get $p) (i32.sub (local.get $nameEnd) (local.get $nameStart))))
    (loop $name
      (v128.store (local.get $p) (v128.load (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br_if $name (i32.lt_u (local.get $p) (local.get $end))))
    (local.set $p (local.get $end))
    (i32.store8 (local.get $p) (i32.const 0x20))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))

    ;; The payload, 16 bytes at a time: a block is stored whole, then if it holds a byte to
    ;; escape, the output goes on from that byte (escaped), overwriting what followed it.
    (local.set $i (local.get $nameEnd))
    (block $tail
      (loop $block
        (br_if $tail (i32.lt_u (i32.sub (local.get $payloadEnd) (local.get $i)) (i32.const 16)))
        (local.set $v (v128.load (local.get $i)))
        (local.set $mask (call $escapeMask (local.get $v)))
        (v128.store (local.get $p) (local.get $v))
        (if (i32.eqz (local.get $mask))
          (then
            (local.set $i (i32.add (local.get $i) (i32.const 16)))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (br $block)))
        (local.set $k (i32.ctz (local.get $mask)))
        (local.set $i (i32.add (local.get $i) (local.get $k)))
        (local.set $p (i32.add (local.get $p) (local.get $k)))
        (i32.store16 (local.get $p) (call $escape (i32.load8_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 2)))
        (br $block)))
    ;; A tail under 16 bytes of a payload of 16 or more: if the payload's last 16 bytes need no
    ;; escape, store them, overlapping bytes already copied. Those land where they already are:
    ;; none of them was escaped, so each sits at its input offset plus the same shift as the tail.
    (if (i32.and
          (i32.lt_u (local.get $i) (local.get $payloadEnd))
          (i32.ge_u (i32.sub (local.get $payloadEnd) (local.get $nameEnd)) (i32.const 16)))
      (then
        (local.set $v (v128.load (i32.sub (local.get $payloadEnd) (i32.const 16))))
        (if (i32.eqz (call $escapeMask (local.get $v)))
          (then
            (local.set $p (i32.add (local.get $p) (i32.sub (local.get $payloadEnd) (local.get $i))))
            (v128.store (i32.sub (local.get $p) (i32.const 16)) (local.get $v))
            (local.set $i (local.get $payloadEnd))))))
    ;; Whatever is left (under 16 bytes), a byte at a time.
    (block $done
      (loop $byte
        (br_if $done (i32.ge_u (local.get $i) (local.get $payloadEnd)))
        (local.set $c (i32.load8_u (local.get $i)))
        (if (i32.or
              (i32.eq (local.get $c) (i32.const 0x5c))
              (i32.or (i32.eq (local.get $c) (i32.const 0x0a)) (i32.eq (local.get $c) (i32.const 0x0d))))
          (then
            (i32.store16 (local.get $p) (call $escape (local.get $c)))
            (local.set $p (i32.add (local.get $p) (i32.const 2))))
          (else
            (i32.store8 (local.get $p) (local.get $c))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $byte)))
    (i32.store8 (local.get $p) (i32.const 0x0a))
    (i32.add (local.get $p) (i32.const 1)))

  ;; Where `frames` stopped, and what it wrote: read by line.ts after each call.
  (global $at (export "at") (mut i32) (i32.const 0))
  (global $records (export "records") (mut i32) (i32.const 0))
  (global $firstId (export "firstId") (mut i32) (i32.const 0))
  (global $lastId (export "lastId") (mut i32) (i32.const 0))
  (global $length (export "length") (mut i32) (i32.const 0))

  ;; A u32 stored big-endian at $p.
  (func $be32 (param $p i32) (result i32)
    (local $x i32)
    (local.set $x (i32.load (local.get $p)))
    (i32.rotl
      (i32.or
        (i32.shr_u (i32.and (local.get $x) (i32.const 0xff00ff00)) (i32.const 8))
        (i32.shl (i32.and (local.get $x) (i32.const 0x00ff00ff)) (i32.const 8)))
      (i32.const 16)))

  ;; Formats the frames staged at [$src, $srcEnd) (a queue entry: `u32 length | type | ...`
  ;; back to back) from $p on, one line per MSG frame (type 0x02, with $clientId) or
  ;; RECORD_WITH_CLIENT frame (type 0x7e, with its own client_id); frames of any other type
  ;; (0: refused) are passed over. So JavaScript makes one call per queue entry, not one per
  ;; record. Returns why it stopped:
  ;;   0  the frames ran out;
  ;;   1  the batch is full: $maxRecords written, or the output reached $fullAt (checked after
  ;;      each frame, the frame taken);
  ;;   2  the next line might not fit in the output room, $room (before the frame);
  ;;   3  the output is not empty and the next line might take the file past $fileRoom bytes
  ;;      of output (before the frame);
  ;;   4  a frame does not fit in what is staged, or its name does not fit in the frame.
  ;; $at is where it stopped, $length where the output ends, $records how many lines it
  ;; wrote (the first with msg_id $firstId, the last $lastId). A line takes at most 24 + 2 x its frame's bytes (ids, spaces, LF,
  ;; and a name and payload that escaping may double), 32 spare bytes after it (see `line`).
  (func (export "frames")
    (param $p i32) (param $clientId i32) (param $src i32) (param $srcEnd i32)
    (param $maxRecords i32) (param $fullAt i32) (param $room i32) (param $fileRoom i32)
    (result i32)
    (local $end i32)
    (local $type i32)
    (local $worst i32)
    (local $id i32)
    (local $msgId i32)
    (local $body i32)
    (local $nameEnd i32)
    (local $stop i32)
    (global.set $records (i32.const 0))
    (block $out
      (loop $frame
        (local.set $stop (i32.const 0))
        (br_if $out (i32.ge_u (local.get $src) (local.get $srcEnd)))
        (local.set $stop (i32.const 4))
        (br_if $out (i32.lt_u (i32.sub (local.get $srcEnd) (local.get $src)) (i32.const 5)))
        (local.set $end (i32.add (i32.add (local.get $src) (i32.const 4)) (call $be32 (local.get $src))))
        ;; The length is a u32: a sum that wrapped is caught as a frame ending before it began.
        (br_if $out (i32.or
          (i32.gt_u (local.get $end) (local.get $srcEnd))
          (i32.lt_u (local.get $end) (i32.add (local.get $src) (i32.const 5)))))
        ;; Below 2^31 for any staged frame, so no sum here wraps.
        (local.set $worst
          (i32.add
            (i32.add (local.get $p) (i32.const 24))
            (i32.shl (i32.sub (local.get $end) (local.get $src)) (i32.const 1))))
        (local.set $stop (i32.const 3))
        (br_if $out (i32.and
          (i32.ne (local.get $p) (i32.const 0))
          (i32.gt_u (local.get $worst) (local.get $fileRoom))))
        (local.set $type (i32.load8_u offset=4 (local.get $src)))
        (if (i32.or
              (i32.eq (local.get $type) (i32.const 0x02))
              (i32.eq (local.get $type) (i32.const 0x7e)))
          (then
            (local.set $stop (i32.const 2))
            (br_if $out (i32.gt_u (i32.add (local.get $worst) (i32.const 32)) (local.get $room)))
            ;; After the type: [client_id,] msg_id, name_len, name, payload.
            (local.set $body (i32.add (local.get $src) (i32.const 5)))
            (local.set $id (local.get $clientId))
            (if (i32.eq (local.get $type) (i32.const 0x7e))
              (then
                (local.set $id (call $be32 (local.get $body)))
                (local.set $body (i32.add (local.get $body) (i32.const 4)))))
            (local.set $nameEnd
              (i32.add
                (i32.add (local.get $body) (i32.const 5))
                (i32.load8_u offset=4 (local.get $body))))
            (local.set $stop (i32.const 4))
            (br_if $out (i32.gt_u (local.get $nameEnd) (local.get $end)))
            (local.set $msgId (call $be32 (local.get $body)))
            (local.set $p
              (call $line
                (local.get $p)
                (local.get $id)
                (local.get $msgId)
                (i32.add (local.get $body) (i32.const 5))
                (local.get $nameEnd)
                (local.get $end)))
            (if (i32.eqz (global.get $records))
              (then (global.set $firstId (local.get $msgId))))
            (global.set $lastId (local.get $msgId))
            (global.set $records (i32.add (global.get $records) (i32.const 1)))))
        (local.set $src (local.get $end))
        (local.set $stop (i32.const 1))
        (br_if $out (i32.or
          (i32.ge_u (global.get $records) (local.get $maxRecords))
          (i32.ge_u (local.get $p) (local.get $fullAt))))
        (br $frame)))
    (global.set $at (local.get $src))
    (global.set $length (local.get $p))
    (local.get $stop))
)
