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
  (func (export "line")
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
)
