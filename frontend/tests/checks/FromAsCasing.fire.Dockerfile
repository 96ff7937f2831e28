FROM alpine as build
RUN true
