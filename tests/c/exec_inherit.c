/* server accepts, then execs itself ("child FD") which echoes on the inherited fd;
 * "server" uses execv, "server-l" execl and "server-le" execle (variadic, with
 * more arguments than registers, so some are passed on the stack);
 * "server-spawn" posix_spawns the child instead and closes its own copy */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/wait.h>
int main(int argc,char**argv){
 if(!strcmp(argv[1],"child")){ int s=atoi(argv[2]); char b[64]; int g=read(s,b,sizeof b); if(g<=0){printf("child read %d\n",g);return 1;} write(s,b,g); printf("child echoed %d%s\n",g,getenv("RBYPASS_EXECLE")?" (envp passed)":""); return 0; }
 int port=atoi(argv[2]); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_port=htons(port); a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);
 if(!strncmp(argv[1],"server",6)){ int l=socket(AF_INET,SOCK_STREAM|SOCK_CLOEXEC,0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4); bind(l,(void*)&a,sizeof a); listen(l,4); printf("listening\n"); fflush(stdout);
   int s=accept(l,0,0); char fd[16]; snprintf(fd,sizeof fd,"%d",s); 
   if(!strcmp(argv[1],"server-l")) execl("/proc/self/exe","x","child",fd,"a","b","c","d","e",(char*)0);
   else if(!strcmp(argv[1],"server-le")){ char *env[]={"RBYPASS_EXECLE=1",0}; extern char **environ; int n=0; while(environ[n]) n++;
     char **e2=malloc((n+2)*sizeof *e2); for(int i=0;i<n;i++) e2[i]=environ[i]; e2[n]=env[0]; e2[n+1]=0;
     execle("/proc/self/exe","x","child",fd,"a","b","c","d","e",(char*)0,e2); }
   else if(!strcmp(argv[1],"server-spawn")){ char *av[]={"x","child",fd,0}; extern char **environ; pid_t pid; int e=posix_spawn(&pid,"/proc/self/exe",0,0,av,environ);
     if(e){ fprintf(stderr,"posix_spawn: %s\n",strerror(e)); return 1; } close(s); int st; waitpid(pid,&st,0); return WIFEXITED(st)?WEXITSTATUS(st):1; }
   else { char *av[]={"x","child",fd,0}; execv("/proc/self/exe",av); }
   perror("exec"); return 1; }
 int s=socket(AF_INET,SOCK_STREAM,0); if(connect(s,(void*)&a,sizeof a)){perror("connect");return 1;}
 write(s,"hello",5); char b[16]; int g=read(s,b,sizeof b); printf("client got %d %.*s\n",g,g>0?g:0,b); return 0; }
