FROM alpine
LABEL org.opencontainers.image.authors="me@example.com"
