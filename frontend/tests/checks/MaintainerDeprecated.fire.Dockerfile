FROM alpine
MAINTAINER me@example.com
