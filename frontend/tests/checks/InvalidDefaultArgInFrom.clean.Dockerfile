ARG TAG=latest
ARG IMAGE=alpine
FROM busybox:${TAG}
FROM ${IMAGE}
