FROM --platform=linux/amd64 alpine AS build_amd64
FROM --platform=$BUILDPLATFORM alpine
