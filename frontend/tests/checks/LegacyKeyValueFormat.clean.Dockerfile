FROM alpine
ENV DEBUG=true
LABEL maintainer=me
