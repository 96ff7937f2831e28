FROM --platform=$BUILDPLATFORM alpine
