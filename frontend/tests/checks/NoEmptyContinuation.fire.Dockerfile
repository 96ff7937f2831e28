FROM alpine
RUN echo a && \

    echo b
