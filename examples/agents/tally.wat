;; tally: counts how often it has seen each content, in its key-value state
;; (kept in its shard's storage partition when the node persists). Answers
;; `inform` with the new count as 4 little-endian bytes. Contents up to 256
;; bytes are keys; longer ones fail the message.
(module
  (import "caxton" "msg_read_content" (func $read (param i32 i32) (result i32)))
  (import "caxton" "state_get" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "caxton" "state_put" (func $put (param i32 i32 i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $length i32)
    ;; The key goes at 1024, the count at 0.
    (local.set $length (call $read (i32.const 1024) (i32.const 256)))
    (if (i32.gt_s (local.get $length) (i32.const 256)) (then (return (i32.const 1))))
    (i32.store (i32.const 0) (i32.const 0))
    ;; Found: the 4 bytes are read in; not found (-9): the count stays 0.
    (drop (call $get (i32.const 1024) (local.get $length) (i32.const 0) (i32.const 4)))
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (if (i32.ne (call $put (i32.const 1024) (local.get $length) (i32.const 0) (i32.const 4)) (i32.const 0))
      (then (return (i32.const 2))))
    (drop (call $reply (i32.const 1) (i32.const 0) (i32.const 4)))
    (i32.const 0)))
