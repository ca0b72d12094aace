"""One module per method, named after it: its spec section and its `DESCRIPTOR` (runner.methods.registry).

Torch-free: `runner validate` imports every module here. The registry finds them by listing this
package, so adding a method adds a file here and edits no list.
"""
