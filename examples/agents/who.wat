;; who: answers every message with `inform` carrying the sender's name as
;; `msg_sender` gives it (an agent's name, on this node or another, or
;; `client-N` for a caller outside the agents).
(module
  (import "caxton" "msg_sender" (func $sender (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32)
    (local $length i32)
    (local.set $length (call $sender (i32.const 0) (i32.const 64)))
    (drop (call $reply (i32.const 1) (i32.const 0) (local.get $length)))
    (i32.const 0)))
