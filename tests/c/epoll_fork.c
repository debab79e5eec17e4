#define _GNU_SOURCE
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/wait.h>
/* epoll echo server + forked clients using select and poll */
#include <poll.h>
#include <sys/select.h>
int main(int argc,char**argv){
  int port=atoi(argv[1]); int n=atoi(argv[2]);
  int l=socket(AF_INET,SOCK_STREAM,0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_port=htons(port); a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);
  if(bind(l,(void*)&a,sizeof a)){perror("bind");return 1;} listen(l,16);
  pid_t c=fork();
  if(c==0){ close(l);
    int s=socket(AF_INET,SOCK_STREAM,0); if(connect(s,(void*)&a,sizeof a)){perror("connect");_exit(1);}
    char b[64]; long sum=0;
    for(int i=0;i<n;i++){ int k=snprintf(b,sizeof b,"msg %d",i); if(write(s,b,k)!=k){perror("w");_exit(1);}
      fd_set r; FD_ZERO(&r); FD_SET(s,&r); struct timeval tv={5,0}; if(select(s+1,&r,0,0,&tv)!=1){fprintf(stderr,"select timeout\n");_exit(1);}
      struct pollfd p={s,POLLIN,0}; if(poll(&p,1,5000)!=1){fprintf(stderr,"poll\n");_exit(1);}
      int g=read(s,b,sizeof b); if(g!=k){fprintf(stderr,"short %d\n",g);_exit(1);} sum+=g; }
    printf("client ok %ld\n",sum); fflush(stdout); close(s); _exit(0);}
  int ep=epoll_create1(0); struct epoll_event ev={.events=EPOLLIN,.data.fd=l}; epoll_ctl(ep,EPOLL_CTL_ADD,l,&ev);
  int done=0; long bytes=0;
  while(!done){ struct epoll_event evs[8]; int k=epoll_wait(ep,evs,8,5000); if(k<=0){fprintf(stderr,"epoll_wait %d\n",k);return 1;}
    for(int i=0;i<k;i++){ int fd=evs[i].data.fd;
      if(fd==l){ int s=accept4(l,0,0,SOCK_NONBLOCK); struct epoll_event e2={.events=EPOLLIN|EPOLLET|EPOLLRDHUP,.data.fd=s}; epoll_ctl(ep,EPOLL_CTL_ADD,s,&e2);}
      else { char b[256]; for(;;){ int g=read(fd,b,sizeof b); if(g>0){bytes+=g; write(fd,b,g);} else if(g==0){ close(fd); done=1; break;} else break; } } } }
  int st; waitpid(c,&st,0); printf("server echoed %ld, child %d\n",bytes,WEXITSTATUS(st)); return 0; }
