FROM alpine AS builder
RUN true
