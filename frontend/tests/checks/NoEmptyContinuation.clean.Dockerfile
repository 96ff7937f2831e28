FROM alpine
RUN echo a && \
# comment
    echo b
