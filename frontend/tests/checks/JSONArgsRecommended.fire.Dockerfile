FROM alpine
ENTRYPOINT my-app --serve
CMD echo "Hello, world!"
