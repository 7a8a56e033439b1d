;; trap: fails every message with a WebAssembly trap (for fault tests).
(module
  (memory (export "memory") 1)
  (func (export "caxton_abi_version") (result i32) (i32.const 1))
  (func (export "caxton_handle") (result i32) (unreachable)))
