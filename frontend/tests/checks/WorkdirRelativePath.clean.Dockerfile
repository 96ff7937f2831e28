FROM alpine AS base
WORKDIR /usr/src
WORKDIR app
FROM base
WORKDIR sub
