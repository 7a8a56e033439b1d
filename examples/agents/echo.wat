;; echo: answers every message with `inform` carrying the same content.
(module
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $length i32)
    ;; Content goes at offset 1024; up to 63 KiB of it is echoed.
    (local.set $length (call $read (i32.const 1024) (i32.const 64512)))
    (if (i32.gt_s (local.get $length) (i32.const 64512))
      (then (local.set $length (i32.const 64512))))
    ;; performative 1 = inform
    (drop (call $reply (i32.const 1) (i32.const 1024) (local.get $length)))
    (i32.const 0)))
