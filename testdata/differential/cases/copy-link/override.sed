# With --link the copy is made onto an empty layer and merged (MergeOp): the
# layer's /d (0755, made by the copy) is applied over the base's /d (0700), so
# current BuildKit's image has /d 0755. 20.10 (no --link) kept 0700.
s,^/d d 0700 0:0$,/d d 0755 0:0,
