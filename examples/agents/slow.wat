;; slow: answers every message like echo, but only after spending 200 µs
;; of CPU in its handler, so one instance serves at most 5,000 messages a
;; second. The stress benchmark's tests plant their breaking point with it.
(module
  (import "caxton" "now_ns" (func $now (result i64)))
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $until i64) (local $length i32)
    (local.set $until (i64.add (call $now) (i64.const 200000)))
    (block $done
      (loop $spin
        (br_if $done (i64.ge_s (call $now) (local.get $until)))
        (br $spin)))
    (local.set $length (call $read (i32.const 1024) (i32.const 1024)))
    (if (i32.gt_s (local.get $length) (i32.const 1024)) (then (local.set $length (i32.const 1024))))
    (drop (call $reply (i32.const 1) (i32.const 1024) (local.get $length)))
    (i32.const 0)))
