FROM scratch
COPY ./forever/helloworld.txt /helloworld.txt
COPY . /src
COPY --from=busybox /tmp/x /x
