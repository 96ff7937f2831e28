FROM alpine AS scratchpad
